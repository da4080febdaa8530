"""Compare page: one edit with full-step sampling and with Clockwork, same seed, speed and quality side by side.

Clockwork (Habibian et al. 2024) replaces the UNet's low-resolution middle by an adaptor on all but every
``clock``-th step; the table reports what that saves (wall time, fps, UNet GFLOPs) and what it costs in quality:
PSNR between the two outputs, PSNR to the exact target when the instruction names a known procedural edit family
(:func:`editor.world.edits.family_of`), and flicker (docs/DESIGN.md section 5).
"""
from __future__ import annotations

import gradio as gr
import numpy as np
import pandas as pd

from editor.eval.metrics import flicker_ratio, psnr
from editor.pipeline import EditResult
from editor.variants import available_variants
from editor.world.edits import FAMILIES, family_of
from ui.common import (ProgressReport, ProgressSink, UserError, base_variant, edit_clip, load_clip,
                       request_from_settings, with_clockwork)
from ui.costs import CostTable
from ui.serving import engine_event, engine_fn, progress_sink
from ui.widgets import App, clock_slider, guidance_sliders, instruction_input, seed_row, steps_slider, synced_videos, \
    video_input

RUNS = ("full", "clockwork")


def default_compare_variant(variants: list[str]) -> str:
    """The distilled MMG student when the family has it (the fast path Clockwork stacks on), else the teacher."""
    return "mmg" if "mmg" in variants else "teacher"


def compare_bases(variants: list[str]) -> list[str]:
    """Variants that have a Clockwork counterpart, without Clockwork themselves."""
    return [v for v in variants if base_variant(v) == v and with_clockwork(v, True, variants) != v]


def _offset_sink(sink: ProgressSink | None, run: int, frames: int) -> ProgressSink | None:
    """Progress of run ``run`` (0, 1) of two, on one bar of ``2 * frames``."""
    if sink is None:
        return None
    return lambda done, total, desc: sink(run * frames + done, 2 * frames, f"{RUNS[run]} run · {desc}")


def speed_table(full: EditResult, cw: EditResult, gflops: tuple[float, float]) -> pd.DataFrame:
    """Wall time, fps, ms per frame, UNet passes and GFLOPs per frame of both runs, and Clockwork's saving."""
    rows = []
    for name, a, b in (("wall time (s)", full.timings.total, cw.timings.total),
                       ("ms per frame", *(1000 * r.timings.total / len(r.frames) for r in (full, cw))),
                       ("UNet ms per frame", *(1000 * r.timings.unet / len(r.frames) for r in (full, cw))),
                       ("UNet passes per frame", full.unet_passes, cw.unet_passes),
                       ("UNet GFLOPs per frame", *gflops)):
        rows.append({"metric": name, "full": round(a, 2), "clockwork": round(b, 2),
                     "saving": f"{100 * (1 - b / a):.0f}%" if a else "n/a"})
    fps = [len(r.frames) / r.timings.total for r in (full, cw)]
    rows.insert(1, {"metric": "fps", "full": round(fps[0], 2), "clockwork": round(fps[1], 2),
                    "saving": f"{fps[1] / fps[0]:.2f}x speed"})
    return pd.DataFrame(rows, columns=["metric", "full", "clockwork", "saving"])


def quality_table(source: np.ndarray, full: np.ndarray, cw: np.ndarray, instruction: str) -> pd.DataFrame:
    """PSNR between the runs, PSNR to the exact target for a known edit family, flicker of each run.

    Flicker is the mean frame-to-frame change relative to the target's (known family) or the source's (otherwise).
    """
    family = family_of(instruction)
    reference = FAMILIES[family].apply(source) if family else source
    rows = [{"metric": "PSNR full vs clockwork (dB)", "full": round(psnr(full, cw), 2), "clockwork": None}]
    if family:
        rows.append({"metric": f"PSNR to target '{family}' (dB)", "full": round(psnr(full, reference), 2),
                     "clockwork": round(psnr(cw, reference), 2)})
    rows.append({"metric": f"flicker (vs {'target' if family else 'source'})",
                 "full": round(flicker_ratio(full, reference), 3), "clockwork": round(flicker_ratio(cw, reference), 3)})
    return pd.DataFrame(rows, columns=["metric", "full", "clockwork"])


def cost_per_step(costs: CostTable, names: tuple[str, str], steps: int, clock: int,
                  latent_hw: tuple[int, int]) -> pd.DataFrame:
    """GFLOPs per frame of every sampler step of both runs (long format for a plot: step, GFLOPs, run)."""
    rows = []
    for run, name in zip(RUNS, names):
        for k, g in enumerate(costs.cost(name, steps, clock, latent_hw).step_gflops, start=1):
            rows.append({"step": k, "GFLOPs": round(g, 3), "run": f"{run} ({name})"})
    return pd.DataFrame(rows, columns=["step", "GFLOPs", "run"])


def run_compare(editor, config, costs: CostTable, video_path: str | None, instruction: str | None, variant: str,
                s_t: float, s_i: float, steps: float, clock: float, seed: float | None, randomize: bool,
                progress: ProgressSink | None = None, rng: np.random.Generator | None = None) -> tuple:
    """Edit with ``variant`` (full steps) and with its Clockwork variant at the same seed.

    Returns ``(full video, clockwork video, speed table, quality table, cost-per-step frame, settings dict)``.
    """
    variants = available_variants(editor.family)
    base = base_variant(variant or "")
    full_req = request_from_settings(editor, instruction, base, s_t, s_i, steps, seed, randomize, False, clock, rng)
    cw_name = with_clockwork(base, True, variants)
    if cw_name == base:
        raise UserError(f"The variant {base!r} has no Clockwork version; choose one of: "
                        f"{', '.join(compare_bases(variants))}.")
    cw_req = request_from_settings(editor, instruction, cw_name, s_t, s_i, steps, full_req.seed, False, True, clock)
    clip = load_clip(editor, config, video_path)
    n = len(clip.frames)
    full = edit_clip(editor, config, video_path, full_req, ProgressReport(n, _offset_sink(progress, 0, n)))
    cw = edit_clip(editor, config, video_path, cw_req, ProgressReport(n, _offset_sink(progress, 1, n)))
    d = editor.family.downsample
    hw = (full.frames.shape[1] // d, full.frames.shape[2] // d)
    plot = cost_per_step(costs, (base, cw_name), full_req.steps, cw_req.clock, hw)
    gflops = tuple(float(plot[plot.run.str.startswith(r)].GFLOPs.sum()) for r in RUNS)
    settings = {"full": base, "clockwork": cw_name, "clock": cw_req.clock, "steps": full_req.steps,
                "seed": full_req.seed, "s_T": full_req.guidance.text, "s_I": full_req.guidance.image,
                "instruction": full_req.instruction, "frames": n, "edit family": family_of(full_req.instruction)}
    return (full.output_path, cw.output_path, speed_table(full, cw, gflops),
            quality_table(clip.frames, full.frames, cw.frames, full_req.instruction), plot, settings)


# ----------------------------------------------------------------------------- layout

def compare_page(app: App) -> None:
    """Compare: the same edit with full-step sampling and with Clockwork, side by side, with figures."""
    bases = compare_bases(app.variants)
    with gr.Row():
        with gr.Column(scale=1):
            video = video_input(app.config, "compare")
            instruction = instruction_input("compare")
            variant = gr.Dropdown(bases, value=default_compare_variant(bases), label="Variant",
                                  info="run with full steps, then with Clockwork")
            clock = clock_slider()
            steps = steps_slider(app.editor)
            s_t, s_i = guidance_sliders(app.editor)
            seed, randomize = seed_row()
            button = gr.Button("Compare", variant="primary", elem_id="compare-run")
        with gr.Column(scale=2):
            pair = synced_videos("compare", ("Full-step sampling", "With Clockwork"))
            speed = gr.Dataframe(label="Speed (per run; saving = Clockwork vs full)", interactive=False)
            quality = gr.Dataframe(label="Quality", interactive=False)
            plot = gr.LinePlot(x="step", y="GFLOPs", color="run", title="UNet GFLOPs per frame at each step",
                               label="Cost per step")
            settings = gr.JSON(label="Settings used")

    def run(video, instruction, variant, s_t, s_i, steps, clock, seed, randomize, progress=gr.Progress()):
        """Run both edits and measure them."""
        return run_compare(app.editor, app.config, app.costs, video, instruction, variant, s_t, s_i, steps, clock,
                           seed, randomize, progress=progress_sink(progress))

    event = button.click(engine_fn(app, run, "comparison"),
                         inputs=[video, instruction, variant, s_t, s_i, steps, clock, seed, randomize],
                         outputs=[pair.left, pair.right, speed, quality, plot, settings], api_name="compare",
                         **engine_event(app))
    pair.after(event)
