"""Speed benchmark: every variant on the same clip in one run, end to end and per stage.

    python -m editor.eval.bench --json runs/bench.json

For every variant, at 256x256 (``--size``), ``--frames`` frames: end-to-end ms per frame and fps (video decode, edit,
video encode), the split per stage (``video_io``, ``encode``, ``unet``, ``decode``), UNet passes per frame, and GFLOPs
per frame counted with ``torch.utils.flop_counter`` (autoencoder encode + decode, UNet steps); for Clockwork variants
also the GFLOPs of one full and one adaptor step. ``ratios`` compares, within the run, every variant's UNet time per
step with the teacher's (MMG: one pass instead of three) and every Clockwork variant's UNet loop with its full-step
variant's. Ratios between variants are only meaningful within one run: absolute times on shared machines drift.

Times are taken over ``--repeats`` rounds; each round runs every variant once, in an order rotated from round to
round, so that a slow spell of a shared machine falls on all variants alike. A variant's times are the median over
rounds of each figure, and every ratio is the median of the ratios computed within each round, reported with its
range over rounds (``ratio_range``): a ratio whose range is wide was measured on a noisy machine.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from editor import video_io
from editor.clockwork import step_flops
from editor.cross_frame_attention import FrameLayout
from editor.layout import frames_to_images
from editor.loading import load_family, model_source
from editor.pipeline import Editor, EditRequest
from editor.variants import available_variants, full_step_variant, get_variant
from editor.world import scenes


def gflops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def flops_per_frame(editor: Editor, frame: np.ndarray, request: EditRequest) -> dict:
    """GFLOPs for one frame: autoencoder encode and decode, and the whole sampling loop (all UNet passes)."""
    fam = editor.family
    images = frames_to_images(frame[None])
    enc = gflops(lambda: fam.encode(images))
    latents = fam.encode(images)
    dec = gflops(lambda: fam.decode(latents))
    total = gflops(lambda: editor.edit_frames(frame[None], request))
    return {"encode": enc, "decode": dec, "unet": total - enc - dec, "total": total}


def time_variant(editor: Editor, clip_path: Path, request: EditRequest, out_dir: Path, size: int, n: int) -> dict:
    """One timed end-to-end edit of the clip (decode, edit, encode): ``EditResult.summary()``."""
    result = editor.edit_video(clip_path, out_dir / f"{request.variant}.mp4", request, short_side=size, max_frames=n)
    return result.summary()


def median_summary(rounds: list[dict]) -> dict:
    """The median over rounds of every timing figure of ``EditResult.summary()`` (counts are equal in every round);
    fps follows from the median ms per frame."""
    row = dict(rounds[0])
    row["ms_per_frame"] = float(np.median([r["ms_per_frame"] for r in rounds]))
    row["fps"] = 1000.0 / row["ms_per_frame"]
    row["stage_ms_per_frame"] = {k: float(np.median([r["stage_ms_per_frame"][k] for r in rounds]))
                                 for k in rounds[0]["stage_ms_per_frame"]}
    return row


def variant_figures(editor: Editor, frame: np.ndarray, request: EditRequest, timed: dict) -> dict:
    """The row of one variant: median times, FLOPs, per-step time, and the Clockwork step FLOPs."""
    row = dict(timed)
    row["gflops_per_frame"] = flops_per_frame(editor, frame, request)
    row["steps"], row["clock"] = request.steps, request.clock
    row["unet_ms_per_step"] = row["stage_ms_per_frame"]["unet"] / request.steps
    variant = get_variant(request.variant)
    if variant.clockwork:
        row["step_gflops"] = clockwork_step_gflops(editor, variant, frame)
    return row


def bench_rounds(editor: Editor, clip: Path, frames: np.ndarray, requests: dict[str, EditRequest], out_dir: Path,
                 size: int, repeats: int) -> list[dict]:
    """``repeats`` rounds of timed edits of ``clip`` (decoded: ``frames``), every variant once a round, the order
    rotated each round (after one untimed warm-up edit per variant: allocations and caches). Returns per round
    ``{variant: summary}``."""
    for request in requests.values():
        editor.edit_frames(frames[:1], request)
    names, rounds = list(requests), []
    for r in tqdm(range(repeats), desc="bench rounds", disable=repeats < 2):
        order = names[r % len(names):] + names[:r % len(names)]
        timed = {v: time_variant(editor, clip, requests[v], out_dir, size, len(frames)) for v in order}
        rounds.append({v: timed[v] for v in names})
    return rounds


def clockwork_step_gflops(editor: Editor, variant, frame: np.ndarray) -> dict:
    """GFLOPs of one UNet call of ``variant`` per frame, full step vs adaptor step, at ``frame``'s latent size (the
    teacher's call is its three batched branches, as in sampling)."""
    fam = editor.family
    unet = variant.unet(fam)
    h, w = (d // fam.downsample for d in frame.shape[:2])
    branches = variant.passes_per_step()
    shape = (branches, unet.config.in_channels, h, w)
    kwargs = {"frame_layout": FrameLayout(branches, 1, 0)}
    f = step_flops(unet, variant.adaptor(fam), shape, cross_attention_kwargs=kwargs)
    return {"full": f.full / 1e9, "adaptor": f.adaptor / 1e9, "adaptor_over_full": f.adaptor / f.full}


def wall_ratios(rows: dict[str, dict]) -> dict:
    """Time ratios between the variants of one round (``{variant: summary}``): UNet time per step over the teacher's
    (all variants run the same steps), and Clockwork UNet loop savings against the full-step variant."""
    out = {}
    for name, r in rows.items():
        o = {}
        if "teacher" in rows and name != "teacher":
            o["per_step_speedup_vs_teacher"] = (rows["teacher"]["stage_ms_per_frame"]["unet"]
                                                / r["stage_ms_per_frame"]["unet"])
        full = rows.get(full_step_variant(name) or "")
        if full is not None:
            o["unet_wall_saving_vs_full"] = 1 - r["stage_ms_per_frame"]["unet"] / full["stage_ms_per_frame"]["unet"]
        if o:
            out[name] = o
    return out


def ratios(rounds: list[dict], rows: dict) -> tuple[dict, dict]:
    """The median over rounds of each within-round time ratio, with the FLOPs savings (from ``rows``); and each time
    ratio's range ``[min, max]`` over rounds."""
    per_round = [wall_ratios(r) for r in rounds]
    med, spread = {}, {}
    for name in per_round[0]:
        for key in per_round[0][name]:
            vals = [pr[name][key] for pr in per_round]
            med.setdefault(name, {})[key] = float(np.median(vals))
            spread.setdefault(name, {})[key] = [float(min(vals)), float(max(vals))]
    for name, r in rows.items():
        full = rows.get(full_step_variant(name) or "")
        if full is not None:
            saving = 1 - r["gflops_per_frame"]["unet"] / full["gflops_per_frame"]["unet"]
            med.setdefault(name, {})["unet_flops_saving_vs_full"] = saving
    return med, spread


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--variants", default=None, help="comma-separated; default: every available variant")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--instruction", default="make it look like it was filmed at night")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--clock", type=int, default=2, help="Clockwork variants: full UNet every clock-th step")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (medians are reported)")
    a = p.parse_args(argv)
    if a.repeats < 1:
        p.error("--repeats must be at least 1")
    if a.threads:
        torch.set_num_threads(a.threads)
    family = load_family(a.model)
    editor = Editor(family)
    variants = a.variants.split(",") if a.variants else available_variants(family)
    steps = a.steps or family.default_steps
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "bench.mp4"
        scene = scenes.eval_clips(a.frames, (a.size, a.size), n_procedural=1)["procedural_0"]
        video_io.write_clip(scene, 8.0, clip)
        requests = {v: EditRequest(a.instruction, family.default_guidance, steps=steps, variant=v, clock=a.clock)
                    for v in variants}
        frames = video_io.read_clip(clip, short_side=a.size, multiple=family.size_multiple).frames
        rounds = bench_rounds(editor, clip, frames, requests, Path(tmp), a.size, a.repeats)
    rows = {v: variant_figures(editor, frames[0], requests[v], median_summary([r[v] for r in rounds]))
            for v in variants}
    med, spread = ratios(rounds, rows)
    report = {"settings": {"size": a.size, "frames": a.frames, "steps": steps, "clock": a.clock,
                           "threads": torch.get_num_threads(), "model": family.name,
                           "model_source": model_source(a.model), "repeats": a.repeats},
              "variants": rows, "ratios": med, "ratio_range": spread}
    print_table(report)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(report, indent=1))
    return report


def print_table(report: dict) -> None:
    print(f"{'variant':<28}{'ms/frame':>10}{'fps':>8}{'io':>8}{'enc':>8}{'unet':>10}{'dec':>8}{'passes':>8}"
          f"{'GFLOPs':>10}")
    for name, r in report["variants"].items():
        s = r["stage_ms_per_frame"]
        print(f"{name:<28}{r['ms_per_frame']:>10.1f}{r['fps']:>8.2f}{s['video_io']:>8.1f}{s['encode']:>8.1f}"
              f"{s['unet']:>10.1f}{s['decode']:>8.1f}{r['unet_passes_per_frame']:>8}"
              f"{r['gflops_per_frame']['total']:>10.2f}")
    spread = report.get("ratio_range", {})
    for name, r in report["ratios"].items():
        rng = spread.get(name, {})
        print(f"{name:<28}" + ", ".join(f"{k} {v:.3f}" + (f" [{rng[k][0]:.3f}, {rng[k][1]:.3f}]" if k in rng else "")
                                        for k, v in r.items()))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
