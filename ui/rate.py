"""Rate page: a blinded A/B of two variants on the same input, and the vote that goes to the ratings store.

As in FastChat's arena (docs/DESIGN.md section 6), pairs live on the server: the pair is chosen and rendered, the
sides are swapped at random, and the server records it (:meth:`~editor.study.store.Store.add_shown_pair`) under an
unguessable pair token bound to the rater who asked for it.  The browser gets the token and the two videos as
padded copies under random names (:func:`anonymous_videos`), so no file name, URL or size tells the sides apart;
the names are revealed after the vote.  ``/vote`` takes the rater token, the pair token, the click and the time to
decide, nothing else: variants, params, seeds and sides come from the server's row, and one vote per pair and per
rater and comparison is enforced by the database.  Rater tokens are issued and signed by the server
(:class:`~editor.study.tokens.RaterTokens`, ``/rater``); a token that does not verify, a pair made for another
rater or another study, a replayed pair or a rater past the vote cap stores nothing and gets a one-line message.
"""
from __future__ import annotations

import functools
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np

from editor import video_io
from editor.study.store import (CHOICES, MAX_DECIDE_MS, DuplicateVote, PairRefused, Store, VoteCapReached,
                                canonical_choice, file_sha256)
from editor.study.tokens import (InvalidToken, Rater, RaterTokens, is_pair_token, load_secret, new_pair_token,
                                 secret_path_for)
from ui.common import ProgressReport, ProgressSink, UserError, edit_clip, load_clip, request_from_settings
from ui.costs import CostTable
from ui.serving import UI_EVENT, VOTE_EVENT, engine_event, engine_fn, gradio_handler, progress_sink
from ui.widgets import (CHOICE_LABELS, App, guidance_sliders, instruction_input, seed_row, steps_slider,
                        synced_videos, video_input, vote_buttons, vote_outputs)

APP_VERSION = "movie-app/2"
SHOWN = CHOICES  # what the rater can click: A = the left video, B = the right one, tie, both_bad
MAX_VOTES_PER_RATER = 1000  # ad-hoc votes one rater token may cast (a study caps itself: one vote per pair)
PAIR_FILES_KEEP_S = 3600    # padded copies older than this are deleted (Gradio has served them from its cache)


# ----------------------------------------------------------------------------- raters

@dataclass(frozen=True)
class RaterWidgets:
    """The rater's token as the app keeps it: in the browser's local storage (``stored``, also the first input of
    the API endpoints that act for a rater), the server's token signer and the per-rater vote cap."""

    stored: gr.BrowserState
    tokens: RaterTokens
    max_votes: int = MAX_VOTES_PER_RATER


def rater_tokens(store: Store, secret: bytes | None = None) -> RaterTokens:
    """The signer of ``store``'s app: ``secret``, else ``$MOVIE_SECRET``, else the secret file next to the database
    (created once, mode 0600)."""
    return RaterTokens(secret if secret is not None else load_secret(secret_path_for(store.url)))


def rater_widgets(store: Store, storage_key: str, secret: bytes | None = None) -> RaterWidgets:
    """The rater token's browser state and signer for :func:`ui.blocks.build_app` (inside its ``gr.Blocks``)."""
    return RaterWidgets(gr.BrowserState(None, storage_key=storage_key), rater_tokens(store, secret))


def verify_rater(tokens: RaterTokens, token) -> Rater:
    """The rater of a token this server issued; :class:`UserError` for anything else."""
    try:
        return tokens.verify(token)
    except InvalidToken as e:
        raise UserError(f"Invalid rater token ({e}): reload the page, or ask /rater for a new one.") from e


def ensure_rater_token(tokens: RaterTokens, current) -> str:
    """The browser's rater token: ``current`` when this server issued it for ad-hoc pairs, else a new one (an id
    from before tokens, or a token of another server, is not trusted: the rater starts afresh)."""
    try:
        rater = tokens.verify(current)
    except InvalidToken:
        return tokens.issue()
    return current if rater.study_id is None else tokens.issue(rater_id=rater.rater_id)


def issue_rater(store: Store, tokens: RaterTokens, study_id: str | None = "") -> str:
    """``/rater``: a new rater token, for ad-hoc pairs or bound to the study ``study_id``."""
    if study_id in (None, ""):
        return tokens.issue()
    if not isinstance(study_id, str) or len(study_id) > 64 or store.study(study_id) is None:
        raise UserError("No study with that id.")
    return tokens.issue(study_id)


# ----------------------------------------------------------------------------- pairs

def default_pair(variants: list[str], costs: CostTable, steps: int) -> tuple[str, str]:
    """``(challenger, teacher)``: the one-step student against the teacher when the family has it, else the cheapest
    variant other than the teacher (the fastest distilled one) against the teacher."""
    others = [v for v in variants if v != "teacher"]
    if not others:
        return "teacher", "teacher"
    if "onestep" in others:
        return "onestep", "teacher"
    return min(others, key=lambda v: costs.cost(v, steps).gflops), "teacher"


def _side(result) -> dict:
    """What a vote records of one rendered side: params, seed and timings."""
    r = result.request
    params = {"steps": r.steps, "s_T": r.guidance.text, "s_I": r.guidance.image, "clock": r.clock}
    return {"variant": r.variant, "params": params, "seed": r.seed, "timings": result.summary()}


def draw_left(rng: np.random.Generator) -> str:
    """The canonical side shown on the left: ``A`` or ``B`` at random."""
    return "A" if rng.random() < 0.5 else "B"


def shown_videos(shown_left: str, video_a: str, video_b: str) -> tuple[str, str]:
    """``(left, right)`` videos of a pair whose canonical sides rendered to ``video_a`` and ``video_b``."""
    return (video_a, video_b) if shown_left == "A" else (video_b, video_a)


def _prune(folder: Path, keep_s: float = PAIR_FILES_KEEP_S) -> None:
    cutoff = time.time() - keep_s
    for old in folder.glob("pair-*.mp4"):
        try:
            if old.stat().st_mtime < cutoff:
                old.unlink()
        except OSError:
            pass


def anonymous_videos(paths: tuple[str, str], folder: str | Path, size: int | None = None) -> tuple[str, str]:
    """Copies of ``paths`` under random names in ``folder``, each padded with random bytes to ``size`` bytes
    (default: both to the larger one's bucket), so neither the name, the URL (Gradio names its cache folders by
    content) nor the size says which variant a video is, or that two pairs share a render."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _prune(folder)
    size = size or video_io.padded_size([Path(p).stat().st_size for p in paths])
    return tuple(video_io.padded_copy(p, folder / f"pair-{uuid.uuid4().hex}.mp4", size) for p in paths)


def record_pair(store: Store, rater: Rater, clip_hash: str, instruction: str, a: Mapping, b: Mapping,
                rng: np.random.Generator, study_pair_id: int | None = None) -> dict:
    """Record the pair of sides ``a`` and ``b`` (each ``variant, params, seed, timings``) for ``rater``, the side
    on the left drawn at random; returns the stored row (``token``, ``shown_left``, ...)."""
    fields = {}
    for key, side in (("a", a), ("b", b)):
        fields |= {f"variant_{key}": side["variant"], f"params_{key}": dict(side.get("params") or {}),
                   f"seed_{key}": side.get("seed"), f"timings_{key}": side.get("timings")}
    return store.add_shown_pair(token=new_pair_token(), rater_id=rater.rater_id, clip_hash=clip_hash,
                                instruction=instruction, shown_left=draw_left(rng), study_pair_id=study_pair_id,
                                **fields)


def render_pair(editor, config, store: Store, tokens: RaterTokens, rater_token, video_path: str | None,
                instruction: str | None, variant_a: str, variant_b: str, s_t: float, s_i: float, steps: float,
                seed: float | None, randomize: bool, progress: ProgressSink | None = None,
                rng: np.random.Generator | None = None) -> tuple[str, str, str]:
    """Render both variants on the clip at the same seed and record the pair for the rater; returns
    ``(left video, right video, pair token)``, the videos as anonymous copies."""
    rater = verify_rater(tokens, rater_token)
    if rater.study_id is not None:
        raise UserError("This rater token is bound to a study; the Rate page needs an ad-hoc one (/rater).")
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
    pair = record_pair(store, rater, file_sha256(video_path), req_a.instruction, _side(results[0]),
                       _side(results[1]), rng)
    videos = anonymous_videos((results[0].output_path, results[1].output_path), config.output_dir)
    for r in results:  # the engine's outputs carry nothing secret, but only the anonymous copies are needed now
        Path(r.output_path).unlink(missing_ok=True)
    return (*shown_videos(pair["shown_left"], *videos), pair["token"])


# ----------------------------------------------------------------------------- votes

def check_decide_ms(decide_ms) -> float | None:
    """The time to decide as a client sent it: ``None`` (the server measures it) or milliseconds in range."""
    if decide_ms is None:
        return None
    if isinstance(decide_ms, bool) or not isinstance(decide_ms, (int, float)) or not math.isfinite(decide_ms) \
            or not 0 <= decide_ms <= MAX_DECIDE_MS:
        raise UserError(f"decide_ms must be a number of milliseconds from 0 to {MAX_DECIDE_MS}.")
    return float(decide_ms)


def reveal(pair: Mapping, shown_choice: str) -> str:
    """Markdown naming the variant behind each side, once the vote is in."""
    left, right = ("a", "b") if pair["shown_left"] == "A" else ("b", "a")
    return (f"**A** (left) was `{pair[f'variant_{left}']}`, **B** (right) was `{pair[f'variant_{right}']}`. "
            f"Your vote: **{CHOICE_LABELS[shown_choice]}** -- saved, thank you.")


def cast_vote(store: Store, tokens: RaterTokens, rater_token, pair_token, shown_choice, decide_ms=None,
              session_id: str = "", max_votes: int | None = MAX_VOTES_PER_RATER) -> dict:
    """Store one vote on the server's pair ``pair_token``; returns ``{"vote_id", "choice", "reveal"}``.

    Refused with a :class:`UserError` and nothing written: a rater token this server did not issue, a pair token
    it does not know, a pair made for another rater or outside the token's study, a second vote on the pair (or
    on the same comparison), a rater past ``max_votes`` ad-hoc votes, a bad choice or time."""
    rater = verify_rater(tokens, rater_token)
    if not is_pair_token(pair_token):
        raise UserError("There is no pair to vote on: make a pair first (the pair token is missing or malformed).")
    if shown_choice not in SHOWN:
        raise UserError(f"The choice must be one of {', '.join(SHOWN)}.")
    decide_ms = check_decide_ms(decide_ms)
    try:
        vote_id, pair = store.vote_on_pair(
            pair_token, rater_id=rater.rater_id, study_id=rater.study_id, shown_choice=shown_choice,
            decide_ms=decide_ms, session_id=session_id, app_version=APP_VERSION,
            max_votes=max_votes if rater.study_id is None else None)
    except DuplicateVote as e:
        raise UserError("You already voted on this pair; make a new one.") from e
    except PairRefused as e:
        raise UserError(f"Vote refused: {e}.") from e
    except VoteCapReached as e:
        raise UserError(f"Vote refused: this rater has cast the most votes one rater may ({max_votes}).") from e
    except ValueError as e:
        raise UserError(f"Invalid vote: {e}.") from e
    return {"vote_id": vote_id, "choice": canonical_choice(shown_choice, pair["shown_left"]),
            "reveal": reveal(pair, shown_choice)}


def _ensure_rater(tokens: RaterTokens, current) -> tuple[str, str]:
    """On page load: the browser's rater token (a new one on the first visit) and the line that shows its id."""
    token = ensure_rater_token(tokens, current)
    return token, f"Your anonymous rater id: `{tokens.verify(token).rater_id}` (kept in this browser)."


def _ui_vote(app: App, rater: RaterWidgets, buttons: dict, choice: str, rater_token, pair_token):
    """A vote button on the Rate page: store the vote, reveal the names, close the buttons."""
    voted = cast_vote(app.store, rater.tokens, rater_token, pair_token, choice, max_votes=rater.max_votes)
    return voted["reveal"], "", *vote_outputs(buttons, False)


# ----------------------------------------------------------------------------- layout

def rate_page(app: App, rater: RaterWidgets, demo: gr.Blocks) -> None:
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
            reveal_md = gr.Markdown(elem_id="rate-reveal")
    pair = gr.Textbox(visible=False, elem_id="rate-pair-token", label="pair token")
    demo.load(functools.partial(_ensure_rater, rater.tokens), inputs=[rater.stored],
              outputs=[rater.stored, rater_md], **UI_EVENT)

    def make_pair(rater_token, video, instruction, a, b, s_t, s_i, steps, seed, randomize,
                  progress=gr.Progress()):
        """Render the pair; the vote buttons open once it is shown."""
        left, right, token = render_pair(app.editor, app.config, app.store, rater.tokens, rater_token, video,
                                         instruction, a, b, s_t, s_i, steps, seed, randomize,
                                         progress=progress_sink(progress))
        return left, right, token, "", *vote_outputs(buttons, True)

    outputs = [pair_videos.left, pair_videos.right, pair, reveal_md, *buttons.values()]
    event = make.click(engine_fn(app, make_pair, "pair"),
                       inputs=[rater.stored, video, instruction, variant_a, variant_b, s_t, s_i, steps, seed,
                               randomize],
                       outputs=outputs, api_name="pair", **engine_event(app))
    pair_videos.after(event)
    for choice, button in buttons.items():
        button.click(gradio_handler(functools.partial(_ui_vote, app, rater, buttons, choice), "vote"),
                     inputs=[rater.stored, pair], outputs=[reveal_md, pair, *buttons.values()],
                     api_visibility="private", **VOTE_EVENT)
    _vote_api(app, rater)


def _vote_api(app: App, rater: RaterWidgets) -> None:
    """``/rater`` and ``/vote``: what any client (the load script, study tools) needs to vote on a pair it got from
    ``/pair`` or ``/study_pair``."""

    def new_rater(study_id: str = "") -> str:
        """A new anonymous rater token: for the Rate page's pairs, or bound to the study ``study_id``."""
        return issue_rater(app.store, rater.tokens, study_id)

    def vote(rater_token: str, pair_token: str, choice: str, decide_ms: float | None = None) -> dict:
        """Store one vote. ``rater_token``: from ``/rater`` (or the page); ``pair_token``: from ``/pair`` or
        ``/study_pair``, made for this rater; ``choice``: ``A`` (left), ``B`` (right), ``tie`` or ``both_bad``;
        ``decide_ms``: the time to decide (default: since the pair was shown). Returns the vote id, the choice in
        canonical sides and the reveal text."""
        return cast_vote(app.store, rater.tokens, rater_token, pair_token, choice, decide_ms, session_id="api",
                         max_votes=rater.max_votes)

    gr.api(gradio_handler(new_rater, "rater"), api_name="rater", **VOTE_EVENT)
    gr.api(gradio_handler(vote, "vote"), api_name="vote", **VOTE_EVENT)
