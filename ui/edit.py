"""Edit page: edit a clip with an instruction, or preview its first frame, with the settings used and speed figures.

The handlers come first (plain functions, testable without Gradio, then the selector's event handlers), the
layout last (:func:`edit_page`).
"""
from __future__ import annotations

import functools
from dataclasses import replace

import gradio as gr
import numpy as np

from editor.clockwork import DEFAULT_CLOCK, check_clock
from editor.pipeline import EditRequest, EditResult, Editor
from editor.variants import VARIANTS
from ui.common import (ProgressReport, ProgressSink, UserError, check_short_side, clip_size, default_variant,
                       edit_clip, frames_to_edit, load_clip, request_from_settings, short_sides, uses_clockwork,
                       with_clockwork)
from ui.costs import cost_frame, latent_size, load_speeds, one_step
from ui.serving import UI_EVENT, engine_event, engine_fn, progress_sink
from ui.widgets import App, clock_slider, guidance_sliders, instruction_input, seed_row, steps_slider, video_input


def describe(result: EditResult, variant: str, size: tuple[int, int], gflops: float | None = None) -> dict:
    """The info panel: the settings actually used and the speed figures of the run."""
    r = result.request
    settings = {"variant": variant, "instruction": r.instruction, "s_T": r.guidance.text,
                "s_I": r.guidance.image, "steps": VARIANTS[variant].steps(r) if variant in VARIANTS else r.steps,
                "seed": r.seed, "frames": len(result.frames), "size": f"{size[0]}x{size[1]}", "fps": result.fps,
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
             clockwork: bool = False, clock: float = DEFAULT_CLOCK, progress: ProgressSink | None = None,
             rng: np.random.Generator | None = None, costs=None, short_side: float | None = None,
             drawn: int | None = None) -> tuple[str, dict]:
    """Edit the clip at ``video_path``; returns the edited MP4's path and the info dict (settings + speed).

    ``config`` is a :class:`ui.widgets.AppConfig` (limits, short_side, max_frames, output_dir); ``short_side`` one
    of the offered working sizes (the config's when ``None``); ``drawn`` the seed a Randomize preview drew, so the
    edit's first frame is that preview; ``progress`` receives ``(frames done, frames, description)``; ``costs`` (a
    :class:`ui.costs.CostTable`) adds the UNet GFLOPs per frame. The clip is decoded once, by the engine (its frame
    count for the progress bar comes from the container's header). User mistakes raise :class:`UserError`.
    """
    request = request_from_settings(editor, instruction, variant, s_t, s_i, steps, seed, randomize, clockwork,
                                    clock, rng, drawn)
    side = check_short_side(config, short_side)
    n = frames_to_edit(config, video_path)
    result = edit_clip(editor, config, video_path, request, ProgressReport(n, progress), side)
    return result.output_path, describe(result, request.variant, _size(result),
                                        _gflops(costs, editor, request, result))


def preview_frame(editor: Editor, config, video_path: str | None, instruction: str | None, variant: str,
                  s_t: float, s_i: float, steps: float, seed: float | None, randomize: bool,
                  clockwork: bool = False, clock: float = DEFAULT_CLOCK, rng: np.random.Generator | None = None,
                  costs=None, short_side: float | None = None,
                  drawn: int | None = None) -> tuple[np.ndarray, dict, int]:
    """The edit's first frame, alone: the same seed (``drawn``, or the one drawn here when Randomize is on, which
    the next edit reuses) and the same cross-frame anchor (the clip's middle frame, docs/DESIGN.md section 2.2), so
    only two frames are sampled. Returns the ``H W 3`` image, the info and the seed used."""
    request = request_from_settings(editor, instruction, variant, s_t, s_i, steps, seed, randomize, clockwork,
                                    clock, rng, drawn)
    clip = load_clip(editor, config, video_path, short_side=check_short_side(config, short_side))
    first_and_anchor = sorted({0, len(clip.frames) // 2})
    try:
        result = editor.edit_frames(clip.frames[first_and_anchor], request)
    except (ValueError, KeyError) as e:
        raise UserError(f"Could not edit the frame: {e.args[0] if e.args else e}.") from e
    result = replace(result, frames=result.frames[:1])
    return result.frames[0], describe(result, request.variant, _size(result),
                                      _gflops(costs, editor, request, result)), request.seed


def _size(result: EditResult) -> tuple[int, int]:
    """``(width, height)`` of the edited frames."""
    height, width = result.frames.shape[1:3]
    return width, height


def _gflops(costs, editor: Editor, request: EditRequest, result: EditResult) -> float | None:
    """UNet GFLOPs per frame of ``request`` at the result's size (``None`` without a cost table)."""
    if costs is None:
        return None
    return costs.of(request, latent_size(editor.family, _size(result))).gflops


def on_variant(name: str, previous: str | None, steps: float, multi_steps: float):
    """The selector changed: tick Clockwork for a Clockwork variant; a few-step student shows its step options
    instead of the steps slider (which follows the option chosen, so the edit reads one steps value), and the
    slider's multi-step value comes back when a multi-step variant is chosen again. Returns updates of the Clockwork
    switch, the slider, the options, the selector, and the new ``previous`` and ``multi_steps`` states."""
    variant = VARIANTS.get(name)
    if variant is None:
        return (gr.skip(),) * 6
    was_few = previous in VARIANTS and one_step(VARIANTS[previous])
    if one_step(variant):
        first = variant.step_options[0]
        return (gr.Checkbox(value=variant.clockwork is not None), gr.Slider(value=first, visible=False),
                gr.Radio(choices=list(variant.step_options), value=first, visible=True),
                gr.Dropdown(info=variant.description), name, multi_steps if was_few else steps)
    return (gr.Checkbox(value=variant.clockwork is not None),
            gr.Slider(value=multi_steps, visible=True) if was_few else gr.Slider(visible=True),
            gr.Radio(visible=False), gr.Dropdown(info=variant.description), name, multi_steps)


def on_clockwork(name: str, on: bool, names: list[str]):
    """The Clockwork switch changed: select the matching variant."""
    chosen = with_clockwork(name, on, names)
    return gr.Dropdown(value=chosen, info=VARIANTS[chosen].description if chosen in VARIANTS else None)


def cost_sizes(app: App, video_path: str | None) -> dict[int, tuple[int, int]]:
    """``{short side: (width, height)}`` of every offered working size: the clip's when there is one, else square."""
    return {side: clip_size(app.editor, video_path, side) or (side, side) for side in short_sides(app.config)}


def on_costs(app: App, video_path: str | None, short_side, steps, clock):
    """The clip, the size, the steps or the clock changed: relabel the selector with the cost per frame at the
    clip's real size, and refresh the cost table (measured speed where ``bench_speed.json`` has it)."""
    try:
        steps, clock, side = int(steps), check_clock(clock), check_short_side(app.config, short_side)
    except (TypeError, ValueError, UserError):
        return gr.skip(), gr.skip()
    sizes = cost_sizes(app, video_path)
    width, height = sizes[side]
    hw = latent_size(app.editor.family, (width, height))
    table = cost_frame(app.costs, app.variants, steps, clock, sizes, load_speeds(app.config.bench_speed))
    return (gr.Dropdown(choices=app.costs.choices(app.variants, steps, clock, hw),
                        label=f"Variant (cost per frame at {width}x{height} px)"), table)


def on_instruction(app: App, instruction: str | None) -> str:
    """The note under the instruction box: empty, or what the embedded model knows when it is far from that."""
    return app.known_edits.note(instruction)


# ----------------------------------------------------------------------------- layout

def _variant_controls(app: App, video, size) -> tuple:
    """Variant selector (each variant with its cost per frame), Clockwork switch with its clock, steps (a slider,
    or a few-step student's options), and the cost table."""
    names, steps0, side = app.variants, app.editor.family.default_steps, app.config.short_side
    first = default_variant(names)
    few = first is not None and one_step(VARIANTS[first])
    steps_value = VARIANTS[first].step_options[0] if few else steps0
    variant = gr.Dropdown(app.costs.choices(names, steps_value), value=first,
                          label=f"Variant (cost per frame at {side}x{side} px)",
                          info=VARIANTS[first].description if first else None, elem_id="edit-variant")
    with gr.Row():
        clockwork = gr.Checkbox(first is not None and uses_clockwork(first), label="Clockwork",
                                info="reuse low-res UNet features between steps",
                                interactive=any(uses_clockwork(n) for n in names), elem_id="edit-clockwork")
        clock = clock_slider()
    steps = steps_slider(app.editor, visible=not few, value=steps_value)
    options = VARIANTS[first].step_options if few else (1,)
    step_option = gr.Radio(list(options), value=options[0], label="Steps (few-step student)", visible=few,
                           info="the step counts this student was trained for", elem_id="edit-step-options")
    costs = gr.Dataframe(cost_frame(app.costs, names, steps_value, DEFAULT_CLOCK, cost_sizes(app, None),
                                    load_speeds(app.config.bench_speed)),
                         label="Cost per frame of each variant and size", interactive=False, elem_id="edit-costs")
    previous, multi_steps = gr.State(first), gr.State(steps0)
    variant.input(on_variant, inputs=[variant, previous, steps, multi_steps],
                  outputs=[clockwork, steps, step_option, variant, previous, multi_steps], **UI_EVENT)
    step_option.input(lambda v: v, inputs=[step_option], outputs=[steps], **UI_EVENT)
    clockwork.input(functools.partial(on_clockwork, names=names), inputs=[variant, clockwork], outputs=[variant],
                    **UI_EVENT)
    gr.on([video.change, size.change, steps.change, clock.change], functools.partial(on_costs, app),
          inputs=[video, size, steps, clock], outputs=[variant, costs], **UI_EVENT)
    return variant, clockwork, clock, steps


def _edit_fns(app: App):
    """The Edit and Preview buttons' functions, bound to the app."""

    def edit(video, instruction, variant, s_t, s_i, steps, seed, randomize, clockwork=False, clock=DEFAULT_CLOCK,
             size=None, drawn=None, progress=gr.Progress()):
        """Edit the whole clip; returns the edited MP4 and the settings used with speed figures."""
        return run_edit(app.editor, app.config, video, instruction, variant, s_t, s_i, steps, seed, randomize,
                        clockwork, clock, progress=progress_sink(progress), costs=app.costs, short_side=size,
                        drawn=drawn)

    def preview(video, instruction, variant, s_t, s_i, steps, seed, randomize, clockwork=False, clock=DEFAULT_CLOCK,
                size=None, drawn=None):
        """Edit only the first frame, as the edit will; keeps a Randomize seed for the next edit."""
        return preview_frame(app.editor, app.config, video, instruction, variant, s_t, s_i, steps, seed,
                             randomize, clockwork, clock, costs=app.costs, short_side=size, drawn=drawn)

    return engine_fn(app, edit, "edit"), engine_fn(app, preview, "preview")


def edit_page(app: App) -> None:
    """Edit: inputs and settings on the left; preview, result and figures on the right."""
    with gr.Row():
        with gr.Column():
            video = video_input(app.config, "edit")
            size = gr.Radio(list(short_sides(app.config)), value=app.config.short_side, elem_id="edit-size",
                            label="Working size (px on the short side)")
            instruction = instruction_input("edit")
            note = gr.Markdown("", elem_id="edit-note")
            variant, clockwork, clock, steps = _variant_controls(app, video, size)
            s_t, s_i = guidance_sliders(app.editor)
            seed, randomize = seed_row()
            with gr.Row():
                preview_button = gr.Button("Preview first frame", elem_id="edit-preview")
                button = gr.Button("Edit", variant="primary", elem_id="edit-run")
        with gr.Column():
            frame = gr.Image(label="First frame preview", interactive=False, height=256, elem_id="edit-frame")
            result = gr.Video(label="Edited video", interactive=False, autoplay=False, buttons=["download"],
                              elem_id="edit-result")
            info = gr.JSON(label="Settings used and speed", open=True, elem_id="edit-info")
    drawn = gr.State(None)  # the seed a Randomize preview drew, for the next edit
    instruction.change(functools.partial(on_instruction, app), inputs=[instruction], outputs=[note],
                       trigger_mode="always_last", **UI_EVENT)
    edit, preview = _edit_fns(app)
    inputs = [video, instruction, variant, s_t, s_i, steps, seed, randomize, clockwork, clock, size, drawn]
    event = button.click(edit, inputs=inputs, outputs=[result, info], api_name="edit", show_progress_on=[result],
                         **engine_event(app))
    shown = preview_button.click(preview, inputs=inputs, outputs=[frame, info, drawn], api_name="preview",
                                 show_progress_on=[frame], **engine_event(app))
    shown.success(lambda i: i["settings"]["seed"], inputs=[info], outputs=[seed], **UI_EVENT)
    event.success(lambda i: (i["settings"]["seed"], None), inputs=[info], outputs=[seed, drawn], **UI_EVENT)
