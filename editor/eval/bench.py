"""Speed benchmark: every variant on the same clip in one run, end to end and per stage.

    python -m editor.eval.bench --json runs/bench.json
    python -m editor.eval.bench --variants mmg@1,teacher@20 --short-sides 256,512 --ablation --json out.json

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

The machine is measured in the same run (docs/DESIGN.md section 8): the fp32 and bf16 peak of a 2048x2048 matmul
(``machine``), and every variant's achieved GFLOP/s end to end (FLOPs of the whole path, encode + every UNet pass +
decode, times its fps) with its ``peak_fraction`` of the bf16 peak. ``--speed fast`` (default) runs the engine as the
app does (:data:`editor.pipeline.FAST`: bf16 autocast, channels-last autoencoder, small autoencoder batches),
``--speed exact`` the fp32 reference; with ``fast`` every variant's output is compared with the fp32 path's
(``psnr_to_fp32``, dB). ``--ablation`` times the first variant under each step from the fp32 path to ``FAST``, one
change at a time, in interleaved rounds (``ablation``: ms per frame, its ratio to fp32, the PSNR to fp32).
A variant may carry its own step count (``teacher@20``); ``rows`` lists one row per variant and short side
(``--short-sides``), the shape the Edit page reads from ``data/results/bench_speed.json``.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from editor import video_io
from editor.clockwork import DEFAULT_CLOCK, step_flops
from editor.cross_frame_attention import FrameLayout
from editor.layout import frames_to_images
from editor.loading import load_family, model_source
from editor.eval.metrics import psnr
from editor.pipeline import EXACT, FAST, Editor, EditRequest, Speed
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
    return {**result.summary(), "steps": get_variant(request.variant).steps(request)}


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
    variant = get_variant(request.variant)
    row["steps"], row["clock"] = variant.steps(request), request.clock
    row["unet_ms_per_step"] = row["stage_ms_per_frame"]["unet"] / row["steps"]
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


def wall_ratios(rows: dict[str, dict], fastest: str | None = None) -> dict:
    """Time ratios between the variants of one round (``{variant: summary}``): UNet time per step over the teacher's
    (all variants run the same steps), and Clockwork UNet loop savings against the full-step variant."""
    out = {}
    for name, r in rows.items():
        o = {}
        if "teacher" in rows and name != "teacher":
            o["per_step_speedup_vs_teacher"] = ((rows["teacher"]["stage_ms_per_frame"]["unet"]
                                                 / rows["teacher"].get("steps", 1))
                                                / (r["stage_ms_per_frame"]["unet"] / r.get("steps", 1)))
        if fastest in rows and name != fastest and "ms_per_frame" in r:
            o["ms_per_frame_over_fastest"] = r["ms_per_frame"] / rows[fastest]["ms_per_frame"]
        full = rows.get(full_step_variant(name) or "")
        if full is not None and full.get("steps") == r.get("steps"):
            o["unet_wall_saving_vs_full"] = 1 - r["stage_ms_per_frame"]["unet"] / full["stage_ms_per_frame"]["unet"]
        if o:
            out[name] = o
    return out


def ratios(rounds: list[dict], rows: dict) -> tuple[dict, dict]:
    """The median over rounds of each within-round time ratio, with the FLOPs savings (from ``rows``); and each time
    ratio's range ``[min, max]`` over rounds."""
    timed = [v for v in rows if "ms_per_frame" in rows[v]]
    fastest = min(timed, key=lambda v: rows[v]["ms_per_frame"]) if timed else None
    per_round = [wall_ratios(r, fastest) for r in rounds]
    med, spread = {}, {}
    for name in per_round[0]:
        for key in per_round[0][name]:
            vals = [pr[name][key] for pr in per_round if key in pr.get(name, {})]
            med.setdefault(name, {})[key] = float(np.median(vals))
            spread.setdefault(name, {})[key] = [float(min(vals)), float(max(vals))]
    for name, r in rows.items():
        full = rows.get(full_step_variant(name) or "")
        if full is not None and full.get("steps") == r.get("steps"):
            saving = 1 - r["gflops_per_frame"]["unet"] / full["gflops_per_frame"]["unet"]
            med.setdefault(name, {})["unet_flops_saving_vs_full"] = saving
    return med, spread


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Best-of-``repeats`` GFLOP/s of an ``n x n`` matmul in ``dtype``: the machine's practical peak."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def machine() -> dict:
    """The matmul peaks of this machine, now (fp32 and bf16), and its thread count."""
    return {"fp32_matmul_gflops": matmul_gflops(torch.float32), "bf16_matmul_gflops": matmul_gflops(torch.bfloat16),
            "threads": torch.get_num_threads()}


def parse_variants(spec: str | None, family, steps: int) -> dict[str, int]:
    """``"mmg@1,teacher@20"`` -> ``{"mmg": 1, "teacher": 20}``; a name without ``@`` runs ``steps``."""
    names = spec.split(",") if spec else available_variants(family)
    out = {}
    for item in names:
        name, _, n = item.strip().partition("@")
        get_variant(name)
        if name in out:
            raise ValueError(f"variant {name} given twice")
        out[name] = int(n) if n else steps
    return out


def precision_psnr(family, frames: np.ndarray, request: EditRequest, speed: Speed) -> float:
    """PSNR (dB) of the edit under ``speed`` to the same edit on the fp32 path (:data:`EXACT`)."""
    return psnr(Editor(family, speed).edit_frames(frames, request).frames,
                Editor(family, EXACT).edit_frames(frames, request).frames)


ABLATION = (  # one change at a time, from the fp32 reference to FAST (docs/DESIGN.md section 8)
    ("fp32 (reference)", EXACT),
    ("+ autoencoder bf16", replace(EXACT, autoencoder="bf16")),
    ("+ UNet bf16", replace(EXACT, autoencoder="bf16", unet="bf16")),
    ("+ channels-last autoencoder", replace(EXACT, autoencoder="bf16", unet="bf16", channels_last=True)),
    ("+ autoencoder batch 4 (FAST)", FAST),
    ("FAST, autoencoder batch 1", replace(FAST, ae_batch=1)),
    ("FAST, autoencoder batch 16", replace(FAST, ae_batch=16)),
    ("FAST, 1 thread", FAST),  # torch.set_num_threads(1) for this setting alone (ABLATION_THREADS)
)
ABLATION_THREADS = {"FAST, 1 thread": 1}


def ablation(family, frames: np.ndarray, request: EditRequest, repeats: int) -> list[dict]:
    """``edit_frames`` of ``frames`` under every :data:`ABLATION` setting, interleaved over ``repeats`` rounds (the
    order rotated); per setting the median ms per frame, its ratio to the fp32 reference within each round
    (median) and the PSNR of its output to the reference's."""
    editors = [(name, Editor(family, speed)) for name, speed in ABLATION]
    outputs = {name: ed.edit_frames(frames, request).frames for name, ed in editors}  # warm-up, and the outputs
    times = {name: [] for name, _ in editors}
    for r in range(repeats):
        order = editors[r % len(editors):] + editors[:r % len(editors)]
        for name, ed in order:
            threads = torch.get_num_threads()
            torch.set_num_threads(ABLATION_THREADS.get(name, threads))
            t0 = time.perf_counter()
            ed.edit_frames(frames, request)
            times[name].append(1000 * (time.perf_counter() - t0) / len(frames))
            torch.set_num_threads(threads)
    ref = ABLATION[0][0]
    rows = []
    for name, speed in ABLATION:
        ratio = [t / t0 for t, t0 in zip(times[name], times[ref])]
        rows.append({"setting": name, "speed": speed.__dict__, "ms_per_frame": float(np.median(times[name])),
                     "ms_range": [float(min(times[name])), float(max(times[name]))],
                     "time_over_fp32": float(np.median(ratio)),
                     "psnr_to_fp32": psnr(outputs[name], outputs[ref])})
    return rows


def bench_size(editor: Editor, requests: dict[str, EditRequest], size: int, n_frames: int, repeats: int) -> dict:
    """Every variant at ``size`` px (square clip, ``n_frames`` frames): rows, ratios and their ranges."""
    family = editor.family
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "bench.mp4"
        scene = scenes.eval_clips(n_frames, (size, size), n_procedural=1)["procedural_0"]
        video_io.write_clip(scene, 8.0, clip)
        frames = video_io.read_clip(clip, short_side=size, multiple=family.size_multiple).frames
        rounds = bench_rounds(editor, clip, frames, requests, Path(tmp), size, repeats)
    rows = {v: variant_figures(editor, frames[0], requests[v], median_summary([r[v] for r in rounds]))
            for v in requests}
    for r in rows.values():
        r["achieved_gflops"] = r["gflops_per_frame"]["total"] * r["fps"]
    med, spread = ratios(rounds, rows)
    return {"variants": rows, "ratios": med, "ratio_range": spread, "frames": frames}


@torch.no_grad()
def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--variants", default=None,
                   help="comma-separated, each optionally with its steps (mmg@1,teacher@20); default: every "
                        "available variant at --steps")
    p.add_argument("--size", type=int, default=256, help="short side (square clips); --short-sides for several")
    p.add_argument("--short-sides", default=None, help="comma-separated short sides, e.g. 256,512")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--instruction", default="make it look like it was filmed at night")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--clock", type=int, default=DEFAULT_CLOCK, help="Clockwork variants: full UNet every clock-th step")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (medians are reported)")
    p.add_argument("--speed", choices=("fast", "exact"), default="fast",
                   help="fast: the app's engine settings (bf16, channels-last autoencoder); exact: fp32")
    p.add_argument("--ablation", action="store_true",
                   help="also time the first variant under each step from fp32 to fast, one change at a time")
    a = p.parse_args(argv)
    if a.repeats < 1:
        p.error("--repeats must be at least 1")
    if a.threads:
        torch.set_num_threads(a.threads)
    family = load_family(a.model)
    speed = FAST if a.speed == "fast" else EXACT
    editor = Editor(family, speed)
    steps = a.steps or family.default_steps
    try:
        plan = parse_variants(a.variants, family, steps)
    except (KeyError, ValueError) as e:
        p.error(str(e))
    sides = [int(x) for x in a.short_sides.split(",")] if a.short_sides else [a.size]
    requests = {v: EditRequest.from_settings(a.instruction, v, family=family, steps=n, clock=a.clock)
                for v, n in plan.items()}
    report = {"settings": {"size": sides[0], "short_sides": sides, "frames": a.frames, "steps": steps,
                           "variant_steps": plan, "clock": a.clock, "threads": torch.get_num_threads(),
                           "speed": speed.__dict__, "model": family.name, "model_source": model_source(a.model),
                           "repeats": a.repeats},
              "machine": machine()}
    peak = report["machine"]["bf16_matmul_gflops"]
    by_size, rows = {}, []
    for side in sides:
        res = bench_size(editor, requests, side, a.frames, a.repeats)
        frames = res.pop("frames")
        for name, r in res["variants"].items():
            r["peak_fraction"] = r["achieved_gflops"] / peak
            if speed != EXACT:
                r["psnr_to_fp32"] = precision_psnr(family, frames, requests[name], speed)
            rows.append({"variant": name, "short_side": side, "steps": r["steps"], "ms_per_frame": r["ms_per_frame"],
                         "fps": r["fps"], "achieved_gflops": r["achieved_gflops"],
                         "peak_fraction": r["peak_fraction"]})
        by_size[str(side)] = res
        if a.ablation and side == sides[0]:
            report["ablation"] = ablation(family, frames, requests[next(iter(requests))], a.repeats)
    report.update(by_size[str(sides[0])])  # variants / ratios / ratio_range at the first size, as before
    report["by_size"] = by_size
    report["rows"] = rows
    machine_after = machine()  # the peak again: a machine that slowed down during the run shows here
    report["machine"]["after_run"] = {k: machine_after[k] for k in ("fp32_matmul_gflops", "bf16_matmul_gflops")}
    print_table(report)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(report, indent=1))
    return report


def print_table(report: dict) -> None:
    m = report["machine"]
    print(f"machine: fp32 matmul {m['fp32_matmul_gflops']:.0f} GFLOP/s, bf16 matmul {m['bf16_matmul_gflops']:.0f} "
          f"GFLOP/s, {m['threads']} threads")
    for side, res in report.get("by_size", {"": report}).items():
        print(f"\n{side} px" if side else "")
        print(f"{'variant':<28}{'steps':>6}{'ms/frame':>10}{'fps':>8}{'io':>7}{'enc':>7}{'unet':>9}{'dec':>7}"
              f"{'GFLOPs':>8}{'GFLOP/s':>9}{'peak':>7}{'PSNR':>7}")
        for name, r in res["variants"].items():
            s = r["stage_ms_per_frame"]
            print(f"{name:<28}{r['steps']:>6}{r['ms_per_frame']:>10.1f}{r['fps']:>8.2f}{s['video_io']:>7.1f}"
                  f"{s['encode']:>7.1f}{s['unet']:>9.1f}{s['decode']:>7.1f}{r['gflops_per_frame']['total']:>8.2f}"
                  f"{r.get('achieved_gflops', 0):>9.1f}{r.get('peak_fraction', 0):>7.3f}"
                  f"{r.get('psnr_to_fp32', float('nan')):>7.1f}")
        spread = res.get("ratio_range", {})
        for name, r in res["ratios"].items():
            rng = spread.get(name, {})
            print(f"{name:<28}" + ", ".join(f"{k} {v:.3f}" + (f" [{rng[k][0]:.3f}, {rng[k][1]:.3f}]" if k in rng
                                                             else "") for k, v in r.items()))
    for row in report.get("ablation", []):
        print(f"{row['setting']:<34}{row['ms_per_frame']:>8.1f} ms/frame  x{row['time_over_fp32']:.3f} of fp32  "
              f"PSNR to fp32 {row['psnr_to_fp32']:.1f} dB")


if __name__ == "__main__":
    main()
