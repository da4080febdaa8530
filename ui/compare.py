"""Compare page: one edit two ways at one seed, speed and quality side by side.

Two modes. **Full-step vs Clockwork**: Clockwork (Habibian et al. 2024) replaces the UNet's low-resolution middle by
an adaptor on all but every ``clock``-th step. **One-step vs multi-step** (when the family has the one-step student,
MoViE 3.5): the ``onestep`` student against the multi-step model it was distilled from (the MMG student at the
chosen steps, or the teacher). The tables report what the faster run saves (wall time, fps, UNet passes and
GFLOPs) and what it costs in quality: PSNR between the two outputs, PSNR to the exact target when the instruction
names a known procedural edit family (:func:`editor.world.edits.family_of`), and flicker (docs/DESIGN.md section 5).
The clip is decoded once for both runs.
"""
from __future__ import annotations

import functools

import gradio as gr
import numpy as np
import pandas as pd

from editor.eval.metrics import flicker_ratio, psnr
from editor.pipeline import EditResult
from editor.variants import VARIANTS, available_variants
from editor.world.edits import FAMILIES, family_of
from ui.common import (ProgressReport, ProgressSink, UserError, base_variant, edit_loaded, load_clip,
                       request_from_settings, with_clockwork)
from ui.costs import CostTable, latent_size
from ui.serving import UI_EVENT, engine_event, engine_fn, progress_sink
from ui.widgets import App, clock_slider, guidance_sliders, instruction_input, seed_row, steps_slider, synced_videos, \
    video_input

CLOCKWORK, ONESTEP = "full-step vs Clockwork", "one-step vs multi-step"  # the modes
RUNS = {CLOCKWORK: ("full", "clockwork"), ONESTEP: ("multi-step", "one-step")}
ONESTEP_VARIANT = "onestep"
PLAYER_LABELS = {CLOCKWORK: ("Full-step sampling", "With Clockwork"), ONESTEP: ("Multi-step", "One-step student")}


def default_compare_variant(variants: list[str]) -> str:
    """The distilled MMG student when the family has it (the fast path Clockwork stacks on), else the teacher."""
    return "mmg" if "mmg" in variants else "teacher"


def compare_bases(variants: list[str]) -> list[str]:
    """Variants that have a Clockwork counterpart, without Clockwork themselves."""
    return [v for v in variants if base_variant(v) == v and with_clockwork(v, True, variants) != v]


def onestep_references(variants: list[str]) -> list[str]:
    """The multi-step models a one-step student is compared with: the MMG student it was distilled from, the
    teacher; none when the family has no one-step student."""
    if ONESTEP_VARIANT not in variants:
        return []
    return [v for v in ("mmg", "teacher") if v in variants]


def compare_modes(variants: list[str]) -> list[str]:
    """The modes this family offers."""
    return [CLOCKWORK] + ([ONESTEP] if onestep_references(variants) else [])


def _offset_sink(sink: ProgressSink | None, run: int, frames: int, runs: tuple[str, str]) -> ProgressSink | None:
    """Progress of run ``run`` (0, 1) of two, on one bar of ``2 * frames``."""
    if sink is None:
        return None
    return lambda done, total, desc: sink(run * frames + done, 2 * frames, f"{runs[run]} run · {desc}")


def speed_table(a: EditResult, b: EditResult, gflops: tuple[float, float],
                runs: tuple[str, str] = RUNS[CLOCKWORK]) -> pd.DataFrame:
    """Wall time, fps, ms per frame, UNet passes and GFLOPs per frame of both runs, and the second's saving."""
    rows = []
    for name, x, y in (("wall time (s)", a.timings.total, b.timings.total),
                       ("ms per frame", *(1000 * r.timings.total / len(r.frames) for r in (a, b))),
                       ("UNet ms per frame", *(1000 * r.timings.unet / len(r.frames) for r in (a, b))),
                       ("UNet passes per frame", a.unet_passes, b.unet_passes),
                       ("UNet GFLOPs per frame", *gflops)):
        rows.append({"metric": name, runs[0]: round(x, 2), runs[1]: round(y, 2),
                     "saving": f"{100 * (1 - y / x):.0f}%" if x else "n/a"})
    fps = [len(r.frames) / r.timings.total for r in (a, b)]
    rows.insert(1, {"metric": "fps", runs[0]: round(fps[0], 2), runs[1]: round(fps[1], 2),
                    "saving": f"{fps[1] / fps[0]:.2f}x speed"})
    return pd.DataFrame(rows, columns=["metric", *runs, "saving"])


def quality_table(source: np.ndarray, a: np.ndarray, b: np.ndarray, instruction: str,
                  runs: tuple[str, str] = RUNS[CLOCKWORK]) -> pd.DataFrame:
    """PSNR between the runs, PSNR to the exact target for a known edit family, flicker of each run.

    Flicker is the mean frame-to-frame change relative to the target's (known family) or the source's (otherwise).
    """
    family = family_of(instruction)
    reference = FAMILIES[family].apply(source) if family else source
    rows = [{"metric": f"PSNR {runs[0]} vs {runs[1]} (dB)", runs[0]: round(psnr(a, b), 2), runs[1]: None}]
    if family:
        rows.append({"metric": f"PSNR to target '{family}' (dB)", runs[0]: round(psnr(a, reference), 2),
                     runs[1]: round(psnr(b, reference), 2)})
    rows.append({"metric": f"flicker (vs {'target' if family else 'source'})",
                 runs[0]: round(flicker_ratio(a, reference), 3), runs[1]: round(flicker_ratio(b, reference), 3)})
    return pd.DataFrame(rows, columns=["metric", *runs])


def cost_per_step(costs: CostTable, names: tuple[str, str], steps: int, clock: int, latent_hw: tuple[int, int],
                  runs: tuple[str, str] = RUNS[CLOCKWORK]) -> pd.DataFrame:
    """GFLOPs per frame of every sampler step of both runs (long format for a plot: step, GFLOPs, run)."""
    rows = []
    for run, name in zip(runs, names):
        for k, g in enumerate(costs.cost(name, steps, clock, latent_hw).step_gflops, start=1):
            rows.append({"step": k, "GFLOPs": round(g, 3), "run": f"{run} ({name})"})
    return pd.DataFrame(rows, columns=["step", "GFLOPs", "run"])


def compared_variants(variant: str | None, variants: list[str], mode: str) -> tuple[str, str]:
    """The two variants a mode runs for the selector's ``variant``: (slower, faster)."""
    if mode == ONESTEP:
        references = onestep_references(variants)
        if not references:
            raise UserError("This model family has no one-step student; compare full-step with Clockwork instead.")
        if variant not in references:
            raise UserError(f"Compare the one-step student with one of: {', '.join(references)}.")
        return variant, ONESTEP_VARIANT
    if mode != CLOCKWORK:
        raise UserError(f"Unknown comparison {mode!r}; choose one of: {', '.join(compare_modes(variants))}.")
    base = base_variant(variant or "")
    if base not in variants:
        raise UserError(f"Unknown variant {base!r}; choose one of: {', '.join(compare_bases(variants))}.")
    faster = with_clockwork(base, True, variants)
    if faster == base:
        raise UserError(f"The variant {base!r} has no Clockwork version; choose one of: "
                        f"{', '.join(compare_bases(variants))}.")
    return base, faster


def run_compare(editor, config, costs: CostTable, video_path: str | None, instruction: str | None, variant: str,
                s_t: float, s_i: float, steps: float, clock: float, seed: float | None, randomize: bool,
                progress: ProgressSink | None = None, rng: np.random.Generator | None = None,
                mode: str = CLOCKWORK) -> tuple:
    """Edit with the two variants of ``mode`` at the same seed (:func:`compared_variants`), the clip decoded once.

    Returns ``(slower video, faster video, speed table, quality table, cost-per-step frame, settings dict)``.
    """
    runs = RUNS.get(mode, RUNS[CLOCKWORK])
    names = compared_variants(variant, available_variants(editor.family), mode)
    first = request_from_settings(editor, instruction, names[0], s_t, s_i, steps, seed, randomize, False, clock, rng)
    second = request_from_settings(editor, instruction, names[1], s_t, s_i, steps, first.seed, False, False, clock)
    clip = load_clip(editor, config, video_path)
    n = len(clip.frames)
    a, b = (edit_loaded(editor, config, clip, req, ProgressReport(n, _offset_sink(progress, k, n, runs)))
            for k, req in enumerate((first, second)))
    hw = latent_size(editor.family, (a.frames.shape[2], a.frames.shape[1]))
    plot = cost_per_step(costs, names, first.steps, first.clock, hw, runs)
    gflops = tuple(float(plot[plot.run.str.startswith(f"{r} (")].GFLOPs.sum()) for r in runs)
    settings = {runs[0]: names[0], runs[1]: names[1], "steps": {runs[0]: VARIANTS[names[0]].steps(first),
                                                                 runs[1]: VARIANTS[names[1]].steps(second)},
                "seed": first.seed, "s_T": first.guidance.text, "s_I": first.guidance.image,
                "instruction": first.instruction, "frames": n, "edit family": family_of(first.instruction)}
    if mode == CLOCKWORK:
        settings["clock"] = second.clock
    return (a.output_path, b.output_path, speed_table(a, b, gflops, runs),
            quality_table(clip.frames, a.frames, b.frames, first.instruction, runs), plot, settings)


def on_mode(mode: str, variants: list[str]):
    """The mode changed: the selector offers that mode's slower variants; the players and the clock follow."""
    bases = onestep_references(variants) if mode == ONESTEP else compare_bases(variants)
    value = bases[0] if mode == ONESTEP and bases else default_compare_variant(bases)
    info = "compared with the one-step student" if mode == ONESTEP else "run with full steps, then with Clockwork"
    left, right = PLAYER_LABELS.get(mode, PLAYER_LABELS[CLOCKWORK])
    return (gr.Dropdown(choices=bases, value=value, info=info), gr.Video(label=left), gr.Video(label=right),
            gr.Slider(visible=mode != ONESTEP))


# ----------------------------------------------------------------------------- layout

def compare_page(app: App) -> None:
    """Compare: the same edit two ways (full-step vs Clockwork, one-step vs multi-step), side by side, with figures."""
    bases = compare_bases(app.variants)
    modes = compare_modes(app.variants)
    with gr.Row():
        with gr.Column(scale=1):
            video = video_input(app.config, "compare")
            instruction = instruction_input("compare")
            mode = gr.Radio(modes, value=CLOCKWORK, label="Compare", visible=len(modes) > 1, elem_id="compare-mode")
            variant = gr.Dropdown(bases, value=default_compare_variant(bases), label="Variant",
                                  info="run with full steps, then with Clockwork", elem_id="compare-variant")
            clock = clock_slider()
            steps = steps_slider(app.editor)
            s_t, s_i = guidance_sliders(app.editor)
            seed, randomize = seed_row()
            button = gr.Button("Compare", variant="primary", elem_id="compare-run")
        with gr.Column(scale=2):
            pair = synced_videos("compare", PLAYER_LABELS[CLOCKWORK])
            speed = gr.Dataframe(label="Speed (per run; saving = the faster run vs the slower)", interactive=False)
            quality = gr.Dataframe(label="Quality", interactive=False)
            plot = gr.LinePlot(x="step", y="GFLOPs", color="run", title="UNet GFLOPs per frame at each step",
                               label="Cost per step")
            settings = gr.JSON(label="Settings used")
    mode.input(functools.partial(on_mode, variants=app.variants), inputs=[mode],
               outputs=[variant, pair.left, pair.right, clock], **UI_EVENT)

    def run(video, instruction, variant, s_t, s_i, steps, clock, seed, randomize, mode=CLOCKWORK,
            progress=gr.Progress()):
        """Run both edits and measure them."""
        return run_compare(app.editor, app.config, app.costs, video, instruction, variant, s_t, s_i, steps, clock,
                           seed, randomize, progress=progress_sink(progress), mode=mode)

    event = button.click(engine_fn(app, run, "comparison"),
                         inputs=[video, instruction, variant, s_t, s_i, steps, clock, seed, randomize, mode],
                         outputs=[pair.left, pair.right, speed, quality, plot, settings], api_name="compare",
                         show_progress_on=[pair.left], **engine_event(app))
    pair.after(event)
