"""Study page: admins create and list the studies (with an admin token), raters work through pre-rendered pairs.

A study (docs/DESIGN.md section 6) is created and pre-rendered by ``python -m editor.study`` (or here) so raters never
wait for generation; :func:`editor.study.studies.next_pair` hands every rater the pairs in their own random order.
A rater votes in a study with a rater token bound to it (made from the browser's token, or from ``/rater``); each
pair is recorded on the server for that rater with the side on the left drawn at random, and its two videos are
served as copies under random names padded to one size for the whole study, so nothing the browser sees before
the vote -- name, URL, size -- tells a variant, or a gold pair's broken side, apart.  The vote goes through
:func:`ui.rate.cast_vote` like any other.
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

from editor import video_io
from editor.study.store import Store
from editor.study.studies import StudyManifest, admin_ok, create_study, next_pair, pair_sides
from editor.study.tokens import RaterTokens
from ui.common import UserError
from ui.rate import RaterWidgets, anonymous_videos, cast_vote, record_pair, shown_videos, verify_rater
from ui.serving import RESULTS_EVENT, UI_EVENT, VOTE_EVENT, engine_event, engine_fn, gradio_handler
from ui.widgets import App, synced_videos, vote_buttons, vote_outputs

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


def load_manifest(uploaded: str | None, server_path: str | None = None) -> StudyManifest:
    """The manifest to create, from a path on the server (``server_path``) or an uploaded file; relative clip paths
    are taken from the manifest's folder, as on the command line.  An uploaded manifest has no folder of its own
    on the server (Gradio keeps uploads in a temporary folder), so its relative clip paths cannot be found: the
    message says so.  Anything wrong is a :class:`UserError` with one line saying what."""
    server_path = (server_path or "").strip()
    if server_path:
        path = Path(server_path).expanduser()
        if not path.is_file():
            raise UserError(f"No manifest file at {server_path} on the server.")
    elif uploaded:
        path = Path(uploaded)
    else:
        raise UserError("Upload a study manifest (JSON) first, or type its path on the server.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("a manifest is a JSON object")
        clips = data.get("clips") if isinstance(data.get("clips"), list) else []
        relative = [c for c in clips if isinstance(c, str) and not Path(c).is_absolute()]
        if relative and not server_path:
            raise ValueError(f"relative clip paths ({relative[0]}, ...) are taken from the manifest's folder, and "
                             "an uploaded manifest has none on the server: use absolute clip paths, or give the "
                             "manifest's path on the server instead of uploading it")
        return StudyManifest.from_dict(data, path.resolve().parent)
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"Could not read the manifest: {e}.") from e
    except (ValueError, TypeError, KeyError) as e:  # JSONDecodeError is a ValueError
        raise UserError(f"Invalid manifest: {e}") from e


def create_from_manifest(store: Store, editor, token: str | None, manifest_path: str | None, out: str | Path,
                         progress: Callable[[int, int], None] | None = None,
                         server_path: str | None = None) -> tuple:
    """Pre-render and record the study of a manifest (uploaded, or ``server_path`` on the server; relative clip
    paths are taken from the manifest's folder); returns ``(the studies table, a status line)``. Same manifest
    twice: nothing is re-rendered."""
    require_admin(token)
    manifest = load_manifest(manifest_path, server_path)
    try:
        study_id = create_study(store, editor, manifest, out, progress)
    except (ValueError, KeyError) as e:  # VideoError is a ValueError: a clip that cannot be read
        raise UserError(f"Could not create the study: {e.args[0] if e.args else e}") from e
    pairs = len(store.study_pairs(study_id))
    return study_overview(store, token), f"Study **{manifest.name}** is ready: `{study_id}`, {pairs} pairs."


def _rendered(pair: Mapping) -> tuple[str, str]:
    """The pre-rendered videos of a study pair; a pair that is not rendered yet is a :class:`UserError`."""
    paths = (pair.get("rendered_a"), pair.get("rendered_b"))
    if not all(p and os.path.isfile(p) for p in paths):
        raise UserError("This study is not rendered yet; ask the study's admin to run its pre-render command.")
    return paths


def study_video_size(store: Store, study_id: str) -> int:
    """The one size every video of the study is padded to: its largest render's bucket (so a gold pair's broken
    side, which compresses worst, is not the largest file)."""
    sizes = [os.path.getsize(p) for pair in store.study_pairs(study_id)
             for p in (pair.get("rendered_a"), pair.get("rendered_b")) if p and os.path.isfile(p)]
    return video_io.padded_size(sizes or [0])


def progress_line(done: int, total: int) -> str:
    """The rater's progress, e.g. ``'3 of 12 pairs rated'``."""
    return f"**{done} of {total}** pairs rated" + (" -- all done, thank you!" if total and done >= total else "")


def study_rater(store: Store, tokens: RaterTokens, study_id, rater_token) -> str:
    """The rater's token bound to ``study_id``: made from a token of any scope for that study's rater, kept as is
    when already bound to it; a token bound to another study is refused."""
    if not study_id:
        raise UserError("Pick a study first.")
    if not isinstance(study_id, str) or store.study(study_id) is None:
        raise UserError("No study with that id.")
    rater = verify_rater(tokens, rater_token)
    if rater.study_id is None:
        return tokens.for_study(rater_token, study_id)
    if rater.study_id != study_id:
        raise UserError("This rater token is bound to another study.")
    return rater_token


def study_next(store: Store, tokens: RaterTokens, study_id, rater_token, folder: str | Path,
               rng: np.random.Generator | None = None) -> tuple[str | None, str | None, str, str, str]:
    """The rater's next pair: ``(left video, right video, progress markdown, pair token, study rater token)``; the
    videos are ``None`` and the pair token empty when the rater has rated every pair."""
    token = study_rater(store, tokens, study_id, rater_token)
    rater = tokens.verify(token)
    pair, done, total = next_pair(store, study_id, rater.rater_id)
    if pair is None:
        return None, None, progress_line(done, total), "", token
    video_a, video_b = _rendered(pair)
    shown = store.open_study_pair(rater.rater_id, pair["id"])
    if shown is None:
        sides = pair_sides(pair)
        a, b = ({"variant": sides[f"variant_{s}"], "params": sides[f"params_{s}"], "seed": sides[f"seed_{s}"],
                 "timings": sides[f"timings_{s}"]} for s in "ab")
        shown = record_pair(store, rater, sides["clip_hash"], sides["instruction"], a, b,
                            rng or np.random.default_rng(), study_pair_id=pair["id"])
    videos = anonymous_videos((video_a, video_b), folder, study_video_size(store, study_id))
    return (*shown_videos(shown["shown_left"], *videos), progress_line(done, total), shown["token"], token)


def study_vote(store: Store, tokens: RaterTokens, study_token, pair_token, shown_choice, folder: str | Path,
               rng: np.random.Generator | None = None) -> tuple[str, str | None, str | None, str, str, str]:
    """Store the vote on ``pair_token`` and move on: ``(reveal markdown, *the next pair as study_next returns it)``."""
    rater = verify_rater(tokens, study_token)
    if rater.study_id is None:
        raise UserError("Start the study first.")
    voted = cast_vote(store, tokens, study_token, pair_token, shown_choice)
    return (voted["reveal"], *study_next(store, tokens, rater.study_id, study_token, folder, rng))


# ----------------------------------------------------------------------------- layout

def _study_admin(app: App):
    """The admin's part of the Study page: create (pre-render) a study from a manifest, list the studies with
    their votes and the raters that gold pairs flag as careless."""
    with gr.Accordion("Admin: studies", open=False):
        gr.Markdown("A manifest lists clips x instructions x variant pairs, the sampler params and how many gold "
                    "pairs to add (see `python -m editor.study --help`); relative clip paths are taken from the "
                    "manifest's folder, so give a manifest with relative paths by its path on the server (an "
                    "upload has no folder there). Creating renders every pair first, so raters never wait. The "
                    "same command on the server: `python -m editor.study create --manifest M.json`.")
        token = gr.Textbox(label="Admin token", type="password", elem_id="study-token")
        manifest = gr.File(label="Study manifest (JSON)", file_types=[".json"], type="filepath",
                           elem_id="study-manifest")
        server_path = gr.Textbox(label="... or the manifest's path on the server", elem_id="study-manifest-path",
                                 placeholder="/srv/studies/pilot.json")
        with gr.Row():
            create = gr.Button("Create and pre-render", elem_id="study-create")
            show = gr.Button("List studies")
        status = gr.Markdown(elem_id="study-status")
        table = gr.Dataframe(label="Studies", interactive=False)

    def create_study(token_value, manifest_path, path_on_server, progress=gr.Progress()):
        """Pre-render the manifest's pairs (through the engine gate) and record the study; a refusal is shown in
        the status line under the button (and as a warning), not as an error badge."""
        bar = (lambda done, total: progress((done, total), desc="Rendering the study", unit="edits"))
        try:
            return create_from_manifest(app.store, app.editor, token_value, manifest_path, app.config.studies_dir,
                                        bar, path_on_server)
        except UserError as e:
            gr.Warning(str(e))
            return gr.skip(), f"**Could not create the study.** {e}"

    created = create.click(engine_fn(app, create_study, "study creation"), inputs=[token, manifest, server_path],
                           outputs=[table, status], api_visibility="private", **engine_event(app))
    show.click(gradio_handler(functools.partial(study_overview, app.store), "study list"), inputs=[token],
               outputs=[table], api_name="studies", **RESULTS_EVENT)
    return created


def study_page(app: App, rater: RaterWidgets, tab: gr.Tab) -> None:
    """Study: raters work through a prepared study's pre-rendered pairs in their own random order."""
    gr.Markdown(RATER_INSTRUCTIONS)
    with gr.Row():
        picker = gr.Dropdown([], label="Study", allow_custom_value=True, scale=3, elem_id="study-picker")
        start = gr.Button("Start / continue", variant="primary", scale=1, elem_id="study-start")
    progress = gr.Markdown(elem_id="study-progress")
    videos = synced_videos("study", ("A", "B"))
    buttons = vote_buttons("study")
    reveal = gr.Markdown(elem_id="study-reveal")
    pair = gr.Textbox(visible=False, elem_id="study-pair-token", label="pair token")
    study_token = gr.Textbox(visible=False, elem_id="study-rater-token", label="study rater token")
    created = _study_admin(app)
    refresh = functools.partial(lambda store: gr.Dropdown(choices=study_choices(store)), app.store)
    tab.select(refresh, outputs=[picker], **UI_EVENT)
    created.success(refresh, outputs=[picker], **UI_EVENT)
    folder = app.config.output_dir

    def begin(study_id, rater_token):
        left, right, line, p, token = study_next(app.store, rater.tokens, study_id, rater_token, folder)
        return left, right, line, p, token, "", *vote_outputs(buttons, bool(p))

    def vote(choice, token, p):
        shown, left, right, line, nxt, token = study_vote(app.store, rater.tokens, token, p, choice, folder)
        return left, right, line, nxt, token, shown, *vote_outputs(buttons, bool(nxt))

    outputs = [videos.left, videos.right, progress, pair, study_token, reveal, *buttons.values()]
    videos.after(start.click(gradio_handler(begin, "study"), inputs=[picker, rater.stored], outputs=outputs,
                             api_name="study_pair", **VOTE_EVENT))
    for choice, button in buttons.items():
        videos.after(button.click(gradio_handler(functools.partial(vote, choice), "vote"),
                                  inputs=[study_token, pair], outputs=outputs, api_visibility="private",
                                  **VOTE_EVENT))
