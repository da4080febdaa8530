"""Launch the video-editing app: parse arguments, load the model family, build the UI, serve it.

    python app.py                                   # the embedded family (data/models/embedded)
    python app.py --model timbrooks/instruct-pix2pix --autoencoder madebyollin/taesd

Environment: ``MOVIE_MODEL`` (model, when --model is not given), ``PORT``, ``SPACE_ID`` (serve on 0.0.0.0).
"""
from __future__ import annotations

import argparse
import os

from editor.loading import EMBEDDED, load_family
from editor.pipeline import Editor
from editor.video_io import VideoLimits
from ui.blocks import AppConfig, build_app


def _positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


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
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Build the app from the arguments and serve it until interrupted."""
    args = parse_args(argv)
    try:
        editor = Editor(load_family(args.model, autoencoder=args.autoencoder))
    except (OSError, ValueError) as e:  # missing folder, not a model, hub unreachable
        raise SystemExit(f"could not load the model {args.model!r}: {e}") from e
    config = AppConfig(limits=VideoLimits(), max_frames=args.max_frames, short_side=args.short_side)
    demo = build_app(editor, config)
    demo.queue(default_concurrency_limit=1, max_size=8).launch(server_name=args.host, server_port=args.port,
                                                               share=args.share)


if __name__ == "__main__":
    main()
