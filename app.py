"""Launch the video-editing app: parse arguments, load the model family, build the UI, serve it.

    python app.py                                   # the embedded family (data/models/embedded)
    python app.py --model timbrooks/instruct-pix2pix --autoencoder madebyollin/taesd

Environment: ``MOVIE_MODEL`` (model, when --model is not given), ``DATABASE_URL`` (ratings database, when --db is
not given; default SQLite ``data/ratings.db``), ``MOVIE_ADMIN_TOKEN`` (admin views), ``PORT``, ``SPACE_ID`` (serve on
0.0.0.0).
"""
from __future__ import annotations

import argparse
import os

from editor.loading import EMBEDDED, load_family
from editor.pipeline import FAST, Editor
from editor.study.store import Store, default_url
from editor.study.studies import DEFAULT_OUT as STUDIES_DIR
from editor.video_io import VideoLimits
from ui.blocks import AppConfig, build_app, launch_kwargs, queue_app



def _positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def database_url(db: str | None) -> str:
    """``--db`` as a SQLAlchemy URL: a URL as is, a plain path as a SQLite file, nothing as the default."""
    if not db:
        return default_url()
    return db if "://" in db else f"sqlite:///{os.path.abspath(db)}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; defaults come from the environment where it has them."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=os.environ.get("MOVIE_MODEL") or str(EMBEDDED),
                   help="embedded family folder, or hub id / folder of an InstructPix2Pix pipeline "
                        "(default: $MOVIE_MODEL or the embedded family)")
    p.add_argument("--autoencoder", default=None, help="optional TAESD autoencoder, e.g. madebyollin/taesd")
    p.add_argument("--host", default="0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1")
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", 7860)))
    p.add_argument("--share", action="store_true", help="create a public Gradio share link")
    p.add_argument("--max-frames", type=_positive_int, default=48, help="frames edited per clip (default 48)")
    p.add_argument("--short-side", type=_positive_int, default=256, help="working short side in pixels (default 256)")
    p.add_argument("--db", default=None, help="ratings database, any SQLAlchemy URL "
                                              "(default: $DATABASE_URL or SQLite data/ratings.db)")
    p.add_argument("--studies", default=str(STUDIES_DIR), help="folder of pre-rendered study videos (served)")
    p.add_argument("--max-waiting", type=int, default=4, help="edits that may wait for the engine (default 4)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Build the app from the arguments and serve it until interrupted."""
    args = parse_args(argv)
    try:
        editor = Editor(load_family(args.model, autoencoder=args.autoencoder), FAST)
    except (OSError, ValueError) as e:  # missing folder, not a model, hub unreachable
        raise SystemExit(f"could not load the model {args.model!r}: {e}") from e
    config = AppConfig(limits=VideoLimits(), max_frames=args.max_frames, short_side=args.short_side,
                       studies_dir=args.studies, max_waiting=args.max_waiting)
    demo = build_app(editor, Store(database_url(args.db)), config)
    queue_app(demo).launch(server_name=args.host, server_port=args.port, share=args.share,
                           **launch_kwargs(config))


if __name__ == "__main__":
    main()
