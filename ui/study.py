"""Study page: admins list the studies (with an admin token), raters work through pre-rendered pairs.

A study (docs/DESIGN.md section 6) is created and pre-rendered by ``python -m editor.study`` so raters never wait for
generation; :func:`editor.study.studies.next_pair` hands every rater the pairs in their own random order. The side shown
on the left is drawn at random per showing, the vote goes through :func:`ui.rate.cast_vote` like any other.
"""
from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd

from editor.study.store import Store
from editor.study.studies import StudyManifest, admin_ok, create_study, next_pair, pair_sides
from ui.common import UserError
from ui.rate import blind, cast_vote, shown_videos
from ui.serving import RESULTS_EVENT, UI_EVENT, VOTE_EVENT, engine_event, engine_fn, gradio_handler
from ui.widgets import REPO_ROOT, App, synced_videos, vote_buttons, vote_outputs

RATER_INSTRUCTIONS = """\
**How to rate.** Each pair shows the same clip edited twice with the same instruction. Watch both videos (they
play in sync), then pick the one that carries out the instruction better *while keeping the rest of the clip
intact and steady*: **A is better**, **B is better**, **Tie** when you cannot tell them apart, **Both are bad**
when neither does the edit. Judge the edit, not the clip itself. Sides are shuffled and names are hidden until
you vote; some pairs are checks with one plainly broken side. Your progress is saved: you can stop at any time
and come back in this browser.
"""
STUDY_COLUMNS = ["study", "id", "created", "pairs", "gold pairs", "votes", "raters", "careless raters"]


def study_choices(store: Store) -> list[tuple[str, str]]:
    """``(name, id)`` of every study, oldest first, for the raters' study picker."""
    return [(s["name"], s["id"]) for s in store.studies()]


def require_admin(token: str | None) -> None:
    """Raise :class:`UserError` unless ``token`` is the server's admin token."""
    if not admin_ok(token):
        raise UserError("Wrong or missing admin token (the server's MOVIE_ADMIN_TOKEN).")


def study_overview(store: Store, token: str | None) -> pd.DataFrame:
    """The admin's table: every study with its pairs, votes, raters and the raters flagged by gold pairs."""
    require_admin(token)
    rows = []
    for s in store.studies():
        pairs = store.study_pairs(s["id"])
        flags = store.rater_flags(s["id"])
        rows.append(dict(zip(STUDY_COLUMNS, (
            s["name"], s["id"], s["created_at"].strftime("%Y-%m-%d %H:%M"), len(pairs),
            sum(p["is_gold"] for p in pairs), store.count_votes(s["id"]), len(flags),
            ", ".join(r for r, f in flags.items() if f["careless"]) or "-"))))
    return pd.DataFrame(rows, columns=STUDY_COLUMNS)


def create_from_manifest(store: Store, editor, token: str | None, manifest_path: str | None, out: str | Path,
                         base: str | Path, progress: Callable[[int, int], None] | None = None) -> tuple:
    """Pre-render and record the study of an uploaded manifest (relative clip paths are taken from ``base``, the
    app's folder); returns ``(the studies table, a status line)``. Same manifest twice: nothing is re-rendered."""
    require_admin(token)
    if not manifest_path:
        raise UserError("Upload a study manifest (JSON) first.")
    try:
        manifest = StudyManifest.from_dict(json.loads(Path(manifest_path).read_text()), Path(base))
    except (ValueError, TypeError, KeyError) as e:  # JSONDecodeError is a ValueError
        raise UserError(f"Invalid manifest: {e}") from e
    try:
        study_id = create_study(store, editor, manifest, out, progress)
    except (ValueError, KeyError) as e:
        raise UserError(f"Could not create the study: {e.args[0] if e.args else e}") from e
    pairs = len(store.study_pairs(study_id))
    return study_overview(store, token), f"Study **{manifest.name}** is ready: `{study_id}`, {pairs} pairs."


def _rendered(pair: Mapping) -> tuple[str, str]:
    """The pre-rendered videos of a study pair; a pair that is not rendered yet is a :class:`UserError`."""
    paths = (pair.get("rendered_a"), pair.get("rendered_b"))
    if not all(p and os.path.isfile(p) for p in paths):
        raise UserError("This study is not rendered yet; ask the study's admin to run its pre-render command.")
    return paths


def progress_line(done: int, total: int) -> str:
    """The rater's progress, e.g. ``'3 of 12 pairs rated'``."""
    return f"**{done} of {total}** pairs rated" + (" -- all done, thank you!" if total and done >= total else "")


def study_next(store: Store, study_id: str | None, rater_id: str | None,
               rng: np.random.Generator | None = None) -> tuple[str | None, str | None, str, dict | None]:
    """The rater's next pair: ``(left video, right video, progress markdown, pair state)``; the videos and the
    pair are ``None`` when the rater has rated every pair."""
    if not study_id:
        raise UserError("Pick a study first.")
    if not rater_id:
        raise UserError("Missing rater id; reload the page.")
    pair, done, total = next_pair(store, study_id, rater_id)
    if pair is None:
        return None, None, progress_line(done, total), None
    video_a, video_b = _rendered(pair)
    fields = {k: v for k, v in pair_sides(pair).items() if not k.startswith("rendered_")}
    state = blind(fields, rng or np.random.default_rng())
    return (*shown_videos(state, video_a, video_b), progress_line(done, total), state)


def study_vote(store: Store, rater_id: str | None, pair: Mapping | None, shown_choice: str,
               rng: np.random.Generator | None = None) -> tuple[str, str | None, str | None, str, dict | None]:
    """Store the vote on ``pair`` and move on: ``(reveal markdown, *the next pair as study_next returns it)``."""
    if not pair:
        raise UserError("Start the study first.")
    voted = cast_vote(store, rater_id, pair, shown_choice)
    return (voted["reveal"], *study_next(store, pair["study_id"], rater_id, rng))


# ----------------------------------------------------------------------------- layout

def _study_admin(app: App):
    """The admin's part of the Study page: create (pre-render) a study from a manifest, list the studies with
    their votes and the raters that gold pairs flag as careless."""
    with gr.Accordion("Admin: studies", open=False):
        gr.Markdown("A manifest lists clips x instructions x variant pairs, the sampler params and how many gold "
                    "pairs to add (see `python -m editor.study --help`); relative clip paths are taken from the "
                    "app's folder. Creating renders every pair first, so raters never wait. The same command on "
                    "the server: `python -m editor.study create --manifest M.json`.")
        token = gr.Textbox(label="Admin token", type="password", elem_id="study-token")
        manifest = gr.File(label="Study manifest (JSON)", file_types=[".json"], type="filepath",
                           elem_id="study-manifest")
        with gr.Row():
            create = gr.Button("Create and pre-render", elem_id="study-create")
            show = gr.Button("List studies")
        status = gr.Markdown(elem_id="study-status")
        table = gr.Dataframe(label="Studies", interactive=False)

    def create_study(token_value, manifest_path, progress=gr.Progress()):
        """Pre-render the manifest's pairs (through the engine gate) and record the study."""
        bar = (lambda done, total: progress((done, total), desc="Rendering the study", unit="edits"))
        return create_from_manifest(app.store, app.editor, token_value, manifest_path, app.config.studies_dir,
                                    REPO_ROOT, bar)

    created = create.click(engine_fn(app, create_study, "study creation"), inputs=[token, manifest],
                           outputs=[table, status], api_visibility="private", **engine_event(app))
    show.click(gradio_handler(functools.partial(study_overview, app.store), "study list"), inputs=[token],
               outputs=[table], api_name="studies", **RESULTS_EVENT)
    return created


def study_page(app: App, rater: gr.BrowserState, tab: gr.Tab) -> None:
    """Study: raters work through a prepared study's pre-rendered pairs in their own random order."""
    gr.Markdown(RATER_INSTRUCTIONS)
    with gr.Row():
        picker = gr.Dropdown([], label="Study", allow_custom_value=True, scale=3, elem_id="study-picker")
        start = gr.Button("Start / continue", variant="primary", scale=1, elem_id="study-start")
    progress = gr.Markdown(elem_id="study-progress")
    videos = synced_videos("study", ("A", "B"))
    buttons = vote_buttons("study")
    reveal = gr.Markdown(elem_id="study-reveal")
    pair = gr.State(None)
    created = _study_admin(app)
    refresh = functools.partial(lambda store: gr.Dropdown(choices=study_choices(store)), app.store)
    tab.select(refresh, outputs=[picker], **UI_EVENT)
    created.success(refresh, outputs=[picker], **UI_EVENT)

    def begin(study_id, rater_id):
        left, right, line, p = study_next(app.store, study_id, rater_id)
        return left, right, line, p, "", *vote_outputs(buttons, p is not None)

    def vote(choice, rater_id, p):
        shown, left, right, line, nxt = study_vote(app.store, rater_id, p, choice)
        return left, right, line, nxt, shown, *vote_outputs(buttons, nxt is not None)

    outputs = [videos.left, videos.right, progress, pair, reveal, *buttons.values()]
    videos.after(start.click(gradio_handler(begin, "study"), inputs=[picker, rater], outputs=outputs,
                             api_visibility="private", **VOTE_EVENT))
    for choice, button in buttons.items():
        videos.after(button.click(gradio_handler(functools.partial(vote, choice), "vote"), inputs=[rater, pair],
                                  outputs=outputs, api_visibility="private", **VOTE_EVENT))
