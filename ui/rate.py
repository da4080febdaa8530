"""Rate page: a blinded A/B of two variants on the same input, and the vote that goes to the ratings store.

As in FastChat's arena (docs/DESIGN.md section 6): the pair is chosen, then the sides are swapped at random; the rater
sees "A" (left) and "B" (right) only; the names are revealed after the vote; one vote per rater per pair (the
store raises :class:`~editor.study.store.DuplicateVote`). A *pair* is a plain dict -- the pair's canonical sides
``variant_a``/``variant_b`` with their params, seeds and timings, the clip hash, the instruction, ``shown_left``
(the canonical side shown on the left) and ``shown_at`` (epoch seconds) -- kept server-side in ``gr.State``, or
sent by an API client to the ``/vote`` endpoint.
"""
from __future__ import annotations

import functools
import re
import time
import uuid
from collections.abc import Callable, Mapping

import gradio as gr
import numpy as np

from editor.study.store import DuplicateVote, Store, VoteIn, file_sha256
from editor.study.studies import BROKEN_VARIANT
from editor.variants import VARIANTS
from ui.common import ProgressReport, ProgressSink, UserError, edit_clip, load_clip, request_from_settings
from ui.costs import CostTable
from ui.serving import UI_EVENT, VOTE_EVENT, engine_event, engine_fn, gradio_handler, progress_sink
from ui.widgets import (CHOICE_LABELS, App, guidance_sliders, instruction_input, seed_row, steps_slider,
                        synced_videos, video_input, vote_buttons, vote_outputs)

APP_VERSION = "movie-app/1"
RATER_ID = re.compile(r"^[A-Za-z0-9_.:-]{8,128}$")
SHOWN = ("A", "B", "tie", "both_bad")  # what the rater can click: A = the left video, B = the right one


def ensure_rater_id(current: str | None) -> str:
    """The browser's anonymous rater id: ``current`` when it is a valid id, else a new random one."""
    if isinstance(current, str) and RATER_ID.match(current):
        return current
    return f"rater-{uuid.uuid4().hex}"


def default_pair(variants: list[str], costs: CostTable, steps: int) -> tuple[str, str]:
    """``(challenger, teacher)``: the cheapest variant other than the teacher (the fastest distilled one once the
    students land) against the teacher."""
    others = [v for v in variants if v != "teacher"]
    if not others:
        return "teacher", "teacher"
    return min(others, key=lambda v: costs.cost(v, steps).gflops), "teacher"


def _side(result) -> dict:
    """What a vote records of one rendered side: params, seed and timings."""
    r = result.request
    params = {"steps": r.steps, "s_T": r.guidance.text, "s_I": r.guidance.image, "clock": r.clock}
    return {"variant": r.variant, "params": params, "seed": r.seed, "timings": result.summary()}


def blind(fields: Mapping, rng: np.random.Generator, now: Callable[[], float] = time.time) -> dict:
    """The pair ``fields`` (canonical sides, clip hash, instruction, ...) as shown: the side on the left drawn at
    random (``shown_left``), and when it was shown (``shown_at``, for the time to decide)."""
    return {**fields, "shown_left": "A" if rng.random() < 0.5 else "B", "shown_at": now()}


def make_pair(clip_hash: str, instruction: str, a: Mapping, b: Mapping, rng: np.random.Generator,
              now: Callable[[], float] = time.time) -> dict:
    """The shown pair for sides ``a`` and ``b`` (each ``variant, params, seed, timings``), sides swapped at random."""
    fields = {"clip_hash": clip_hash, "instruction": instruction}
    for key, side in (("a", a), ("b", b)):
        fields |= {f"variant_{key}": side["variant"], f"params_{key}": dict(side.get("params") or {}),
                   f"seed_{key}": side.get("seed"), f"timings_{key}": side.get("timings")}
    return blind(fields, rng, now)


def shown_videos(pair: Mapping, video_a: str, video_b: str) -> tuple[str, str]:
    """``(left, right)`` videos of a pair whose canonical sides rendered to ``video_a`` and ``video_b``."""
    return (video_a, video_b) if pair["shown_left"] == "A" else (video_b, video_a)


def render_pair(editor, config, video_path: str | None, instruction: str | None, variant_a: str, variant_b: str,
                s_t: float, s_i: float, steps: float, seed: float | None, randomize: bool,
                progress: ProgressSink | None = None, rng: np.random.Generator | None = None) -> tuple[str, str, dict]:
    """Render both variants on the clip at the same seed; returns ``(left video, right video, pair)``."""
    rng = rng or np.random.default_rng()
    if variant_a == variant_b:
        raise UserError("Pick two different variants to compare.")
    req_a = request_from_settings(editor, instruction, variant_a, s_t, s_i, steps, seed, randomize, rng=rng)
    req_b = request_from_settings(editor, instruction, variant_b, s_t, s_i, steps, req_a.seed, False, rng=rng)
    n = len(load_clip(editor, config, video_path).frames)
    results = []
    for k, req in enumerate((req_a, req_b)):
        sink = None if progress is None else \
            (lambda done, total, desc, k=k: progress(k * n + done, 2 * n, f"clip {k + 1} of 2 · {desc}"))
        results.append(edit_clip(editor, config, video_path, req, ProgressReport(n, sink)))
    pair = make_pair(file_sha256(video_path), req_a.instruction, _side(results[0]), _side(results[1]), rng)
    return (*shown_videos(pair, results[0].output_path, results[1].output_path), pair)


def canonical_choice(shown_choice: str, shown_left: str) -> str:
    """The rater's click (``A`` = left, ``B`` = right, ``tie``, ``both_bad``) in the pair's canonical sides."""
    if shown_choice not in SHOWN:
        raise UserError(f"The choice must be one of {', '.join(SHOWN)}, got {shown_choice!r}.")
    if shown_choice in ("tie", "both_bad"):
        return shown_choice
    if shown_choice == "A":
        return shown_left
    return "B" if shown_left == "A" else "A"


def _decide_ms(pair: Mapping, decide_ms: float | None, now: Callable[[], float]) -> float:
    """Time to decide: as given (API clients), else from when the pair was shown."""
    if decide_ms is not None:
        return decide_ms
    shown_at = pair.get("shown_at")
    return max(0.0, 1000 * (now() - float(shown_at))) if shown_at is not None else 0.0


def vote_in(rater_id: str, pair: Mapping, shown_choice: str, decide_ms: float | None = None,
            session_id: str = "", now: Callable[[], float] = time.time) -> VoteIn:
    """The :class:`VoteIn` for a click on ``pair``; a malformed pair or unknown variant raises :class:`UserError`."""
    if not isinstance(pair, Mapping) or not pair.get("variant_a"):
        raise UserError("There is nothing to vote on yet: make a pair first.")
    unknown = [pair[k] for k in ("variant_a", "variant_b") if pair.get(k) not in VARIANTS
               and pair.get(k) != BROKEN_VARIANT]
    if unknown:
        raise UserError(f"Unknown variant {unknown[0]!r}.")
    fields = {k: pair.get(k) for k in ("clip_hash", "instruction", "variant_a", "variant_b", "params_a", "params_b",
                                       "seed_a", "seed_b", "timings_a", "timings_b", "study_id", "pair_id")}
    try:
        return VoteIn(rater_id=rater_id, shown_left=pair.get("shown_left"),
                      choice=canonical_choice(shown_choice, pair.get("shown_left")),
                      decide_ms=_decide_ms(pair, decide_ms, now), session_id=session_id,
                      app_version=APP_VERSION, **{k: v for k, v in fields.items() if v is not None})
    except (TypeError, ValueError) as e:
        raise UserError(f"Invalid vote: {e}.") from e


def reveal(pair: Mapping, shown_choice: str) -> str:
    """Markdown naming the variant behind each side, once the vote is in."""
    left, right = ("a", "b") if pair["shown_left"] == "A" else ("b", "a")
    return (f"**A** (left) was `{pair[f'variant_{left}']}`, **B** (right) was `{pair[f'variant_{right}']}`. "
            f"Your vote: **{CHOICE_LABELS[shown_choice]}** -- saved, thank you.")


def cast_vote(store: Store, rater_id: str | None, pair: Mapping | None, shown_choice: str,
              decide_ms: float | None = None, session_id: str = "", now: Callable[[], float] = time.time) -> dict:
    """Store one vote; returns ``{"vote_id", "choice", "reveal"}``. A second vote on the same pair by the same rater
    raises :class:`UserError` and writes nothing."""
    if not isinstance(rater_id, str) or not RATER_ID.match(rater_id):
        raise UserError("Missing or malformed rater id; reload the page.")
    vote = vote_in(rater_id, pair, shown_choice, decide_ms, session_id, now)
    try:
        vote_id = store.add_vote(vote)
    except DuplicateVote as e:
        raise UserError("You already voted on this pair; make a new one.") from e
    except ValueError as e:
        raise UserError(f"Invalid vote: {e}.") from e
    return {"vote_id": vote_id, "choice": vote.choice, "reveal": reveal(pair, shown_choice)}


def _ensure_rater(current: str | None) -> tuple[str, str]:
    """On page load: the browser's rater id (a new one on the first visit) and the line that shows it."""
    rater_id = ensure_rater_id(current)
    return rater_id, f"Your anonymous rater id: `{rater_id}` (kept in this browser)."


def _ui_vote(app: App, buttons: dict, choice: str, rater_id: str | None, pair: dict | None):
    """A vote button on the Rate page: store the vote, reveal the names, close the buttons."""
    voted = cast_vote(app.store, rater_id, pair, choice)
    return voted["reveal"], None, *vote_outputs(buttons, False)


# ----------------------------------------------------------------------------- layout

def rate_page(app: App, rater: gr.BrowserState, demo: gr.Blocks) -> None:
    """Rate: a blinded A/B of two variants on the same input; names are revealed after the vote."""
    challenger, teacher = default_pair(app.variants, app.costs, app.editor.family.default_steps)
    rater_md = gr.Markdown(elem_id="rate-rater")
    with gr.Row():
        with gr.Column(scale=1):
            video = video_input(app.config, "rate")
            instruction = instruction_input("rate")
            with gr.Row():
                variant_a = gr.Dropdown(app.variants, value=challenger, label="First variant")
                variant_b = gr.Dropdown(app.variants, value=teacher, label="Second variant")
            s_t, s_i = guidance_sliders(app.editor)
            steps = steps_slider(app.editor)
            seed, randomize = seed_row()
            make = gr.Button("Make a blinded pair", variant="primary", elem_id="rate-make")
        with gr.Column(scale=2):
            pair_videos = synced_videos("rate", ("A", "B"))
            buttons = vote_buttons("rate")
            reveal = gr.Markdown(elem_id="rate-reveal")
    pair = gr.State(None)
    demo.load(_ensure_rater, inputs=[rater], outputs=[rater, rater_md], **UI_EVENT)

    def make_pair(video, instruction, a, b, s_t, s_i, steps, seed, randomize, progress=gr.Progress()):
        """Render the pair; the vote buttons open once it is shown."""
        left, right, p = render_pair(app.editor, app.config, video, instruction, a, b, s_t, s_i, steps, seed,
                                     randomize, progress=progress_sink(progress))
        return left, right, p, "", *vote_outputs(buttons, True)

    outputs = [pair_videos.left, pair_videos.right, pair, reveal, *buttons.values()]
    event = make.click(engine_fn(app, make_pair, "pair"),
                       inputs=[video, instruction, variant_a, variant_b, s_t, s_i, steps, seed, randomize],
                       outputs=outputs, api_name="pair", **engine_event(app))
    pair_videos.after(event)
    for choice, button in buttons.items():
        button.click(gradio_handler(functools.partial(_ui_vote, app, buttons, choice), "vote"),
                     inputs=[rater, pair], outputs=[reveal, pair, *buttons.values()], api_visibility="private",
                     **VOTE_EVENT)
    _vote_api(app)


def _vote_api(app: App) -> None:
    """The ``/vote`` endpoint: the vote of any client (the load script, study tools) on a pair it was shown."""

    def vote(rater_id: str, pair: dict, choice: str, decide_ms: float | None = None) -> dict:
        """Store one vote. ``pair``: the pair as shown (variant_a/b, params_a/b, seed_a/b, clip_hash, instruction,
        shown_left); ``choice``: ``A`` (left), ``B`` (right), ``tie`` or ``both_bad``. Returns the vote id, the
        choice in canonical sides and the reveal text."""
        return cast_vote(app.store, rater_id, pair, choice, decide_ms, session_id="api")

    gr.api(gradio_handler(vote, "vote"), api_name="vote", **VOTE_EVENT)
