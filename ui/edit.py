"""Edit page: edit a clip with an instruction, or preview its first frame, with the settings used and speed figures.

The handlers come first (plain functions, testable without Gradio, then the selector's event handlers), the
layout last (:func:`edit_page`).
"""
from __future__ import annotations

import functools

import gradio as gr
import numpy as np

from editor.pipeline import EditRequest, EditResult, Editor
from editor.variants import VARIANTS
from ui.common import (ProgressReport, ProgressSink, UserError, check_clock, edit_clip, load_clip,
                       request_from_settings, uses_clockwork, with_clockwork)
from ui.costs import one_step
from ui.serving import UI_EVENT, engine_event, engine_fn, progress_sink
from ui.widgets import App, clock_slider, guidance_sliders, instruction_input, seed_row, steps_slider, video_input


def describe(result: EditResult, variant: str, size: tuple[int, int], gflops: float | None = None) -> dict:
    """The info panel: the settings actually used and the speed figures of the run."""
    r = result.request
    settings = {"variant": variant, "instruction": r.instruction, "s_T": r.guidance.text,
                "s_I": r.guidance.image, "steps": r.steps, "seed": r.seed,
                "frames": len(result.frames), "size": f"{size[0]}x{size[1]}", "fps": result.fps,
                "notes": list(result.notes)}
    if uses_clockwork(variant):
        settings["clock"] = r.clock
    speed = result.summary()
    if gflops is not None:
        speed["unet_gflops_per_frame"] = gflops
    return {"settings": settings, "speed": _rounded(speed)}


def _rounded(value, digits: int = 2):
    """Round floats (recursively in dicts) for display."""
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    return round(value, digits) if isinstance(value, float) else value


def run_edit(editor: Editor, config, video_path: str | None, instruction: str | None, variant: str,
             s_t: float, s_i: float, steps: float, seed: float | None, randomize: bool,
             clockwork: bool = False, clock: float = 2, progress: ProgressSink | None = None,
             rng: np.random.Generator | None = None, costs=None) -> tuple[str, dict]:
    """Edit the clip at ``video_path``; returns the edited MP4's path and the info dict (settings + speed).

    ``config`` is a :class:`ui.blocks.AppConfig` (limits, short_side, max_frames, output_dir); ``progress``
    receives ``(frames done, frames, description)``; ``costs`` (a :class:`ui.costs.CostTable`) adds the UNet
    GFLOPs per frame. User mistakes raise :class:`UserError`.
    """
    request = request_from_settings(editor, instruction, variant, s_t, s_i, steps, seed, randomize, clockwork,
                                    clock, rng)
    clip = load_clip(editor, config, video_path)
    result = edit_clip(editor, config, video_path, request, ProgressReport(len(clip.frames), progress))
    return result.output_path, describe(result, request.variant, _size(result),
                                        _gflops(costs, editor, request, result))


def preview_frame(editor: Editor, config, video_path: str | None, instruction: str | None, variant: str,
                  s_t: float, s_i: float, steps: float, seed: float | None, randomize: bool,
                  clockwork: bool = False, clock: float = 2, rng: np.random.Generator | None = None,
                  costs=None) -> tuple[np.ndarray, dict]:
    """Edit only the first frame (a quick look before the whole clip); returns the ``H W 3`` image and the info."""
    request = request_from_settings(editor, instruction, variant, s_t, s_i, steps, seed, randomize, clockwork,
                                    clock, rng)
    clip = load_clip(editor, config, video_path, max_frames=1)
    try:
        result = editor.edit_frames(clip.frames[:1], request)
    except (ValueError, KeyError) as e:
        raise UserError(f"Could not edit the frame: {e.args[0] if e.args else e}.") from e
    return result.frames[0], describe(result, request.variant, _size(result), _gflops(costs, editor, request, result))


def _size(result: EditResult) -> tuple[int, int]:
    """``(width, height)`` of the edited frames."""
    height, width = result.frames.shape[1:3]
    return width, height


def _gflops(costs, editor: Editor, request: EditRequest, result: EditResult) -> float | None:
    """UNet GFLOPs per frame of ``request`` at the result's latent size (``None`` without a cost table)."""
    if costs is None:
        return None
    height, width = result.frames.shape[1:3]
    d = editor.family.downsample
    return costs.cost(request.variant, request.steps, request.clock, (height // d, width // d)).gflops


def on_variant(name: str):
    """The selector changed: tick Clockwork for a Clockwork variant, lock steps for a one-step variant."""
    variant = VARIANTS.get(name)
    if variant is None:
        return gr.skip(), gr.skip(), gr.skip()
    fixed = one_step(variant)
    return (gr.Checkbox(value=variant.clockwork is not None),
            gr.Slider(interactive=not fixed, info="one-step variant: always 1 step" if fixed else None),
            gr.Dropdown(info=variant.description))


def on_clockwork(name: str, on: bool, names: list[str]):
    """The Clockwork switch changed: select the matching variant."""
    chosen = with_clockwork(name, on, names)
    return gr.Dropdown(value=chosen, info=VARIANTS[chosen].description if chosen in VARIANTS else None)


def on_costs(app: App, steps, clock):
    """Steps or clock changed: relabel the selector with the new cost per frame."""
    try:
        return gr.Dropdown(choices=app.costs.choices(app.variants, int(steps), check_clock(clock)))
    except (TypeError, ValueError, UserError):
        return gr.skip()


# ----------------------------------------------------------------------------- layout

def _variant_controls(app: App) -> tuple:
    """Variant selector (each variant with its cost per frame), Clockwork switch with its clock, steps."""
    names, steps0 = app.variants, app.editor.family.default_steps
    first = next((n for n in names if not uses_clockwork(n)), names[0] if names else None)
    side = app.config.short_side
    variant = gr.Dropdown(app.costs.choices(names, steps0), value=first,
                          label=f"Variant (cost per frame at {side}x{side} px)",
                          info=VARIANTS[first].description if first else None, elem_id="edit-variant")
    with gr.Row():
        clockwork = gr.Checkbox(False, label="Clockwork", info="reuse low-res UNet features between steps",
                                interactive=any(uses_clockwork(n) for n in names), elem_id="edit-clockwork")
        clock = clock_slider()
    steps = steps_slider(app.editor)
    variant.input(on_variant, inputs=[variant], outputs=[clockwork, steps, variant], **UI_EVENT)
    clockwork.input(functools.partial(on_clockwork, names=names), inputs=[variant, clockwork], outputs=[variant],
                    **UI_EVENT)
    gr.on([steps.change, clock.change], functools.partial(on_costs, app), inputs=[steps, clock], outputs=[variant],
          **UI_EVENT)
    return variant, clockwork, clock, steps


def _edit_fns(app: App):
    """The Edit and Preview buttons' functions, bound to the app."""

    def edit(video, instruction, variant, s_t, s_i, steps, seed, randomize, clockwork=False, clock=2,
             progress=gr.Progress()):
        """Edit the whole clip; returns the edited MP4 and the settings used with speed figures."""
        return run_edit(app.editor, app.config, video, instruction, variant, s_t, s_i, steps, seed, randomize,
                        clockwork, clock, progress=progress_sink(progress), costs=app.costs)

    def preview(video, instruction, variant, s_t, s_i, steps, seed, randomize, clockwork=False, clock=2):
        """Edit only the first frame."""
        return preview_frame(app.editor, app.config, video, instruction, variant, s_t, s_i, steps, seed,
                             randomize, clockwork, clock, costs=app.costs)

    return engine_fn(app, edit, "edit"), engine_fn(app, preview, "preview")


def edit_page(app: App) -> None:
    """Edit: inputs and settings on the left; preview, result and figures on the right."""
    with gr.Row():
        with gr.Column():
            video = video_input(app.config, "edit")
            instruction = instruction_input("edit")
            variant, clockwork, clock, steps = _variant_controls(app)
            s_t, s_i = guidance_sliders(app.editor)
            seed, randomize = seed_row()
            with gr.Row():
                preview_button = gr.Button("Preview first frame", elem_id="edit-preview")
                button = gr.Button("Edit", variant="primary", elem_id="edit-run")
        with gr.Column():
            frame = gr.Image(label="First frame preview", interactive=False, height=256, elem_id="edit-frame")
            result = gr.Video(label="Edited video", interactive=False, buttons=["download"], elem_id="edit-result")
            info = gr.JSON(label="Settings used and speed", open=True, elem_id="edit-info")
    edit, preview = _edit_fns(app)
    inputs = [video, instruction, variant, s_t, s_i, steps, seed, randomize, clockwork, clock]
    event = button.click(edit, inputs=inputs, outputs=[result, info], api_name="edit", **engine_event(app))
    preview_button.click(preview, inputs=inputs, outputs=[frame, info], api_name="preview", **engine_event(app))
    event.success(lambda i: i["settings"]["seed"], inputs=[info], outputs=[seed], **UI_EVENT)
