"""Live page: the webcam edited frame by frame, with the achieved fps and the latency per frame (docs/DESIGN.md
section 8).

Gradio's own streaming: a ``gr.Image(sources=["webcam"], streaming=True)`` sends a frame every ``stream_every``
seconds to its ``.stream`` event while the user records, for at most ``time_limit`` seconds; the instruction, the
variant and both guidance sliders are inputs of that event, so changing them changes the stream while it runs. Each
frame goes through the one-step path (:meth:`editor.pipeline.Editor.edit_frames` on one frame, no cross-frame
anchor) with the engine's fast settings (:data:`editor.pipeline.FAST`). Per-session state (:class:`LiveSession`:
the instruction's encoded text states, frame count, timings) lives in ``gr.State``; the instruction is encoded once
per instruction, not per frame.

The handlers come first (plain functions, testable without a browser), the layout last (:func:`live_page`).
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field, replace

import gradio as gr
import numpy as np
import torch
from PIL import Image

from editor.pipeline import FAST, Editor
from editor.variants import VARIANTS, available_variants
from ui.common import make_request
from ui.serving import gradio_handler
from ui.widgets import App, guidance_sliders, instruction_input

LIVE_CONCURRENCY = "live"  # the stream's own worker: frames never wait behind a clip edit's queue slot
STREAM_EVERY = 0.05        # seconds between webcam frames sent to the server (a 20 fps feed at most)
TIME_LIMIT = 600           # seconds one stream may run (Gradio ends it; the user starts it again)
WINDOW = 30                # frames the fps and latency figures average over


@dataclass
class LiveSession:
    """One browser session's stream: the cached instruction states, and the recent frames' timings."""

    instruction: str | None = None
    states: tuple[torch.Tensor, torch.Tensor] | None = None  # (instruction, empty instruction) text states
    encodes: int = 0                                        # how often an instruction was encoded
    frames: int = 0
    done_at: deque = field(default_factory=lambda: deque(maxlen=WINDOW))     # perf_counter() when a frame was done
    latency_ms: deque = field(default_factory=lambda: deque(maxlen=WINDOW))  # engine ms per frame

    def instruction_states(self, editor: Editor, instruction: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The instruction's text states, encoded once per instruction (a changed instruction is encoded again)."""
        if instruction != self.instruction or self.states is None:
            self.states = editor.encode_instruction(instruction)
            self.instruction = instruction
            self.encodes += 1
        return self.states

    def record(self, latency_s: float) -> None:
        self.frames += 1
        self.done_at.append(time.perf_counter())
        self.latency_ms.append(1000 * latency_s)

    @property
    def fps(self) -> float | None:
        """Edited frames delivered per second over the recent window (``None`` before the second frame)."""
        if len(self.done_at) < 2:
            return None
        span = self.done_at[-1] - self.done_at[0]
        return (len(self.done_at) - 1) / span if span > 0 else None

    def stats(self) -> str:
        """The figures line under the edited stream."""
        if not self.frames:
            return "Start the webcam to edit it live."
        latency = float(np.median(self.latency_ms))
        fps = self.fps
        shown = f"{fps:.1f} fps" if fps is not None else "— fps"
        return (f"**{shown}** achieved · latency {latency:.0f} ms per frame (engine alone: up to "
                f"{1000 / latency:.0f} fps) · {self.frames} frames edited")


def live_variant(names: list[str]) -> str | None:
    """The fastest variant of ``names``: the one-step student where the family has it, else the MMG student (run at
    one step), else the first."""
    for name in ("onestep", "mmg"):
        if name in names:
            return name
    return names[0] if names else None


def fit_frame(frame: np.ndarray, short_side: int, multiple: int) -> np.ndarray:
    """``H W 3`` uint8 resized to ``short_side`` on its short side, then centre-cropped to sides that are multiples
    of ``multiple`` (the model family's)."""
    h, w = frame.shape[:2]
    scale = short_side / min(h, w)
    size = (max(multiple, round(w * scale)), max(multiple, round(h * scale)))
    if size != (w, h):
        frame = np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR))
    h, w = frame.shape[:2]
    ch, cw = h - h % multiple, w - w % multiple
    top, left = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(frame[top:top + ch, left:left + cw])


def edit_live_frame(editor: Editor, frame: np.ndarray | None, instruction: str | None, variant: str,
                    s_t: float, s_i: float, steps: float, session: LiveSession | None,
                    short_side: int = 256) -> tuple[np.ndarray | None, str, LiveSession]:
    """Edit one webcam frame at ``short_side`` px (the app's working size); returns the edited frame, the figures
    line and the session. Without a frame or an
    instruction the frame is passed through unedited (the stream keeps running while the user types)."""
    session = session if isinstance(session, LiveSession) else LiveSession()
    if frame is None:
        return None, session.stats(), session
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=2)
    frame = fit_frame(np.asarray(frame[..., :3], dtype=np.uint8), short_side, editor.family.size_multiple)
    instruction = (instruction or "").strip()
    if not instruction:
        return frame, "Type an instruction to edit the stream.", session
    request = replace(make_request(instruction, variant, s_t, s_i, steps, 0, available_variants(editor.family)),
                      cross_frame=False)  # one frame at a time: no anchor to attend to
    states = session.instruction_states(editor, instruction)
    t0 = time.perf_counter()
    result = editor.edit_frames(frame[None], request, instruction_states=states)
    session.record(time.perf_counter() - t0)
    return result.frames[0], session.stats(), session


# ----------------------------------------------------------------------------- layout

def live_page(app: App) -> None:
    """Live: the webcam on the left, the edited stream and its figures on the right; instruction, variant, steps
    and guidance sliders below, all read again for every frame."""
    editor = Editor(app.editor.family, FAST)  # the fast engine settings, whatever the app's editor uses
    names = app.variants
    first = live_variant(names)
    with gr.Row():
        with gr.Column():
            camera = gr.Image(label="Webcam", sources=["webcam"], streaming=True, type="numpy", height=320,
                              elem_id="live-camera")
        with gr.Column():
            edited = gr.Image(label="Edited stream", interactive=False, streaming=True, height=320,
                              elem_id="live-output")
            stats = gr.Markdown("Start the webcam to edit it live.", elem_id="live-stats")
    with gr.Row():
        with gr.Column():
            instruction = instruction_input("live")
        with gr.Column():
            variant = gr.Dropdown(names, value=first, label="Variant", elem_id="live-variant",
                                  info=VARIANTS[first].description if first else None)
            steps = gr.Slider(1, 8, value=1, step=1, label="Steps per frame", elem_id="live-steps",
                              info="1 step: the one-step path; more steps are slower")
            s_t, s_i = guidance_sliders(app.editor)
    session = gr.State(None)

    def frame_fn(frame, instruction, variant, s_t, s_i, steps, session):
        return edit_live_frame(editor, frame, instruction, variant, s_t, s_i, steps, session, app.config.short_side)

    camera.stream(gradio_handler(frame_fn, "live edit"), inputs=[camera, instruction, variant, s_t, s_i, steps,
                                                                  session],
                  outputs=[edited, stats, session], stream_every=STREAM_EVERY, time_limit=TIME_LIMIT,
                  concurrency_id=LIVE_CONCURRENCY, concurrency_limit=2, show_progress="hidden",
                  api_visibility="private")
