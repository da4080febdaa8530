"""The app: ``build_app(editor, store, config)`` lays out its five pages in one ``gr.Blocks``.

Pages: Edit, Compare, Rate, Study, Results (docs/DESIGN.md section 1), one module each (:mod:`ui.edit`,
:mod:`ui.compare`, :mod:`ui.rate`, :mod:`ui.study`, :mod:`ui.results`) with its plain handler functions above its
layout builder; :mod:`ui.common` holds the handlers' shared helpers, :mod:`ui.widgets` the shared widgets and
:mod:`ui.serving` adapts handlers to Gradio. Nothing here holds state at module level: the engine, the ratings
store and the config come in as arguments, the per-app services (the edit gate, the cost table) are made here,
per-session values live in ``gr.State`` and the rater id in ``gr.BrowserState``.
"""
from __future__ import annotations

import gradio as gr

from editor.pipeline import Editor
from editor.study.store import Store
from ui.compare import compare_page
from ui.costs import CostTable
from ui.edit import edit_page
from ui.live import live_page
from ui.rate import rate_page, rater_widgets
from ui.results import results_page
from ui.serving import EditGate
from ui.study import study_page
from ui.widgets import FIRST_FRAME_HEAD, App, AppConfig, example_instructions

RATER_KEY = "movie-rater-token"  # localStorage key of the rater token the server signed

__all__ = ["AppConfig", "build_app", "queue_app", "launch_kwargs", "example_instructions"]


def build_app(editor: Editor, store: Store, config: AppConfig | None = None, secret: bytes | None = None) -> gr.Blocks:
    """The whole app for ``editor`` and ``store``; serve it with ``queue_app(demo).launch(**launch_kwargs(...))``.
    ``secret`` signs rater tokens (default: ``$MOVIE_SECRET``, else a file the app creates next to the database)."""
    config = config or AppConfig()
    side = config.short_side // editor.family.downsample
    app = App(editor, store, config, EditGate(config.max_waiting), CostTable(editor.family, (side, side)))
    with gr.Blocks(title=config.title, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(f"# {config.title}\nEdit a short clip with an instruction, compare full sampling with "
                    "Clockwork, rate blinded pairs, run a preference study and see the leaderboard.")
        rater = rater_widgets(store, RATER_KEY, secret)
        with gr.Tab("Edit", id="edit"):
            edit_page(app)
        with gr.Tab("Live", id="live"):
            live_page(app)
        with gr.Tab("Compare", id="compare"):
            compare_page(app)
        with gr.Tab("Rate", id="rate"):
            rate_page(app, rater, demo)
        with gr.Tab("Study", id="study") as study_tab:
            study_page(app, rater, study_tab)
        with gr.Tab("Results", id="results") as results_tab:
            results_page(app, results_tab)
    return demo


def queue_app(demo: gr.Blocks, max_size: int = 256) -> gr.Blocks:
    """Queue the app. Engine events share one bounded worker (:class:`ui.serving.EditGate`); votes and results have
    their own concurrency ids and limits, so they never wait behind an edit."""
    return demo.queue(default_concurrency_limit=1, max_size=max_size)


def launch_kwargs(config: AppConfig) -> dict:
    """``launch()`` options: only the app's output folder may be served as files (study videos are served as
    anonymous copies there, never from the study folder); uploads over the size limit are refused by Gradio as
    they arrive, before they are stored; every player shows its first frame (:data:`ui.widgets.FIRST_FRAME_HEAD`)."""
    return {"allowed_paths": [config.output_dir], "max_file_size": config.limits.max_bytes,
            "head": FIRST_FRAME_HEAD}
