"""The procedural edit benchmark: run variants on a folder of clips for every edit family, score against exact targets.

    python -m editor.eval.evaluate --clips data/eval_clips --json runs/eval.json

For every clip in ``--clips`` and every chosen edit family, one instruction is taken from the family's paraphrases
(``--paraphrases``; rotating over clips so every paraphrase is used) or from ``--instructions FILE``. Every variant
edits the clip with the same seed; the metrics (docs/DESIGN.md section 5) are

* ``instruction_accuracy``: share of edits whose output is nearer (PSNR) to the requested family's target than to
  every other family's target;
* ``psnr_to_target``: PSNR of the output to the exact target clip;
* ``psnr_to_reference``: PSNR to the teacher's output at the same seed, steps and scales (``null`` for the teacher);
* ``psnr_to_full``: for a Clockwork variant (``X+clockwork...``), PSNR to ``X``'s full-step output at the same seed,
  steps and scales, when ``X`` is among the variants (``null`` otherwise);
* ``flicker_ratio``: mean absolute frame-to-frame change of the output over that of the target clip;

with per-edit breakdowns, accuracy split by seen / held-out paraphrase, and ``autoencoder_psnr`` of the family (on the
clips' source frames and the targets), with the reference level ``exact_edit``: the exact edits computed from what the
autoencoder keeps of the source and passed through it, scored like a variant.

``--sweep`` adds the controllability sweep (docs/DESIGN.md section 5; MoViE keeps both sliders working after
distillation): on ``--sweep-tasks`` of the (clip, edit) tasks, each variant edits the first ``--sweep-frames`` frames
at ``s_T`` in ``SWEEP_TEXT`` (``s_I`` at its default), and at ``s_I`` in ``SWEEP_IMAGE`` (``s_T`` at its default).
Edit strength should rise with ``s_T`` and faithfulness to the source with ``s_I``; each is measured two ways: edit
strength as the mean absolute change from the source (``edit_strength``) and as the share of the requested change
applied (``edit_progress``, direction-aware), faithfulness as PSNR to the source (``psnr_to_source``) and as the
correlation of edges with the source's (``structure_to_source``, blind to colour). The report gives, for each, the
Spearman correlation per task (and its mean) and that of the mean curve.
``--sweep-axes image`` (or ``text``) sweeps one slider only: the teacher's sweep costs three UNet passes a step.
``--sweep-text`` / ``--sweep-image`` replace a slider's swept values (at least 3, increasing).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from editor import video_io
from editor.clockwork import DEFAULT_CLOCK
from editor.eval import metrics
from editor.layout import frames_to_images, images_to_frames
from editor.loading import load_family, model_source
from editor.pipeline import Editor, EditRequest
from editor.variants import available_variants, full_step_variant, get_variant
from editor.world import edits
from editor.world.edits import N_SEEN

REFERENCE = "teacher"  # the variant psnr_to_reference and paired_vs_reference compare against, when it was run
VIDEO_EXTS = {".mp4", ".mov", ".webm", ".mkv", ".avi", ".gif", ".m4v"}
SWEEP_TEXT = (2.0, 5.0, 8.0, 11.0, 14.0)   # s_T values of the sweep (the MMG training range, U[2, 14])
SWEEP_IMAGE = (1.0, 1.5, 2.0, 2.5, 3.0)    # s_I values of the sweep (U[1, 3])
# slider -> (values, its metrics: the first keeps the report's top-level keys, the others go under "also");
# a metric takes (output, source, target)
SWEEP_AXES = {"text": (SWEEP_TEXT, {"edit_strength": lambda o, s, t: metrics.edit_strength(o, s),
                                    "edit_progress": metrics.edit_progress}),
              "image": (SWEEP_IMAGE, {"psnr_to_source": lambda o, s, t: metrics.psnr(o, s),
                                      "structure_to_source": lambda o, s, t: metrics.structure_to_source(o, s)})}


@dataclass(frozen=True)
class Task:
    clip: str
    family: str
    instruction: str
    split: str  # seen | held-out | custom


class EditRunner:
    """``editor.edit_frames`` with an optional on-disk cache (``--cache DIR``): an output is keyed by the sha256 of the
    weights the variant runs (UNet, autoencoder, adaptor), the input frames and every request field, so a later run
    reuses e.g. the teacher's outputs when only a new variant is added, and never a stale output."""

    def __init__(self, editor: Editor, cache: Path | None = None):
        self.editor, self.cache = editor, cache
        self._weights: dict[tuple[str, int | None], str] = {}
        self.hits = 0

    def weights_hash(self, variant_name: str, clock: int | None = None) -> str:
        """sha256 of the weights ``variant_name`` runs at ``clock`` (which picks a clock's specialist adaptor)."""
        if (variant_name, clock) not in self._weights:
            fam, v = self.editor.family, get_variant(variant_name)
            mods = [m for m in (v.unet(fam), fam.autoencoder, v.adaptor(fam, clock)) if m is not None]
            h = hashlib.sha256()
            for m in mods:
                for k, t in sorted(m.state_dict().items()):
                    h.update(k.encode())
                    h.update(t.detach().cpu().contiguous().numpy().tobytes())
            self._weights[(variant_name, clock)] = h.hexdigest()
        return self._weights[(variant_name, clock)]

    def key(self, frames: np.ndarray, request: EditRequest) -> str:
        fields = dataclasses.asdict(request)
        fields["steps"] = get_variant(request.variant).steps(request)  # a few-step student runs its own count
        if not get_variant(request.variant).clockwork:
            fields.pop("clock")  # the clock does not change a full-step variant's output
        h = hashlib.sha256(json.dumps(fields, sort_keys=True).encode())
        h.update(self.weights_hash(request.variant, fields.get("clock")).encode())  # one hash per variant when no clock
        h.update(str(frames.shape).encode())
        h.update(np.ascontiguousarray(frames).tobytes())
        return h.hexdigest()

    def __call__(self, frames: np.ndarray, request: EditRequest) -> np.ndarray:
        if self.cache is None:
            return self.editor.edit_frames(frames, request).frames
        path = self.cache / f"{self.key(frames, request)}.npy"
        if path.exists():
            self.hits += 1
            return np.load(path)
        out = self.editor.edit_frames(frames, request).frames
        self.cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, out)
        tmp.replace(path)  # atomic: a killed run never leaves a truncated output behind
        return out


def list_clips(folder: Path) -> list[Path]:
    clips = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in VIDEO_EXTS)
    if not clips:
        raise SystemExit(f"no video files in {folder}")
    return clips


def make_tasks(clips: list[str], families: list[str], paraphrases: str, custom: dict | None) -> list[Task]:
    """One task per (clip, family); instructions rotate over the chosen paraphrases so all of them are used."""
    tasks = []
    for ci, clip in enumerate(clips):
        for fi, fam in enumerate(families):
            if custom is not None:
                texts = custom[fam] if isinstance(custom[fam], list) else [custom[fam]]
                tasks.append(Task(clip, fam, texts[(ci + fi) % len(texts)], "custom"))
                continue
            allp = edits.get_family(fam).paraphrases
            idx = {"seen": range(N_SEEN), "held-out": range(N_SEEN, len(allp)), "all": range(len(allp))}[paraphrases]
            k = list(idx)[(ci + fi) % len(idx)]
            tasks.append(Task(clip, fam, allp[k], "seen" if k < N_SEEN else "held-out"))
    return tasks


def autoencoder_psnr(family, clips: dict[str, np.ndarray], targets: dict, families: list[str], seed: int = 0) -> dict:
    """Reconstruction PSNR of the family's autoencoder on each clip's source frames and, per edit family, on the
    target clips (``targets[clip][family]``): the latter bounds what any variant can reach in PSNR to target (its
    output is a decoded latent). ``exact_edit`` is the reference level of ``exact_edit_through``."""
    def round_trip(frames):
        return images_to_frames(family.decode(family.encode(frames_to_images(frames))))

    per = {name: metrics.psnr(round_trip(frames), frames) for name, frames in clips.items()}
    per_family = {f: metrics.mean_or_none(metrics.psnr(round_trip(targets[clip][f]), targets[clip][f])
                                          for clip in clips) for f in families}
    bicubic = {name: metrics.downsample_psnr(frames, 4) for name, frames in clips.items()}
    return {"mean": metrics.mean_or_none(per.values()), "per_clip": per, "per_family": per_family,
            "bicubic_x4_per_clip": bicubic,
            "exact_edit": exact_edit_through(round_trip, clips, targets, families, seed)}


def exact_edit_through(round_trip, clips: dict[str, np.ndarray], targets: dict, families: list[str],
                       seed: int = 0) -> dict:
    """What an editor that computed every edit exactly, but saw the source only through the autoencoder and answered
    through it, would score: each family's edit (``editor.world.edits``) applied to ``round_trip(source)`` and
    round-tripped again, scored like a variant (nearest target, PSNR to target). A reference level for
    ``instruction_accuracy`` and ``psnr_to_target``, not a strict bound (a model may map latents to latents better than
    this pixel-space route): a miss here means the edit's target depends on detail the latent does not keep (e.g.
    cartoon's colour quantisation and ink thresholds on a fine texture)."""
    rows = []
    for clip, frames in clips.items():
        seen = round_trip(frames)
        for f in families:
            scores = metrics.target_psnrs(round_trip(edits.get_family(f).apply(seen, seed)), targets[clip])
            nearest = metrics.nearest_of(scores)
            rows.append({"clip": clip, "edit": f, "hit": nearest == f, "nearest": nearest,
                         "hit_margin": metrics.margin_of(scores, f), "psnr_to_target": scores[f]})
    return {"instruction_accuracy": float(np.mean([r["hit"] for r in rows])),
            "psnr_to_target": metrics.mean_or_none(r["psnr_to_target"] for r in rows), "n": len(rows), "rows": rows}


def score(outputs: dict, tasks: list[Task], targets: dict, reference: str | None) -> dict:
    """Metrics per variant from ``outputs[(variant, task)]`` against ``targets[clip][family]``."""
    report = {}
    for variant in {v for v, _ in outputs}:
        rows = []
        for t in tasks:
            out, tgt = outputs[(variant, t)], targets[t.clip][t.family]
            ref = outputs.get((reference, t)) if reference and variant != reference else None
            full = outputs.get((full_step_variant(variant), t))
            scores = metrics.target_psnrs(out, targets[t.clip])  # one PSNR per family, for all three fields
            nearest = metrics.nearest_of(scores)
            rows.append({"clip": t.clip, "edit": t.family, "instruction": t.instruction, "split": t.split,
                         "hit": nearest == t.family, "nearest": nearest,
                         "hit_margin": metrics.margin_of(scores, t.family),
                         "psnr_to_target": scores[t.family],
                         "psnr_to_reference": metrics.psnr(out, ref) if ref is not None else None,
                         "psnr_to_full": metrics.psnr(out, full) if full is not None else None,
                         "flicker_ratio": metrics.flicker_ratio(out, tgt)})
        report[variant] = summarise(rows)
    for variant, r in report.items():  # paired on the same tasks: which edits a variant gains and loses
        for key, other in paired_partners(variant, report, reference):
            r[key] = metrics.paired_hits([x["hit"] for x in report[other]["rows"]], [x["hit"] for x in r["rows"]])
    return report


def paired_partners(variant: str, names, reference: str | None) -> list[tuple[str, str]]:
    """``(report key, other variant)`` for the paired comparisons of ``variant`` among ``names``: against the
    ``reference`` (the teacher) and against its full-step variant, when they were run."""
    pairs = (("paired_vs_reference", reference), ("paired_vs_full", full_step_variant(variant)))
    return [(key, other) for key, other in pairs if other in names and other != variant]


def summarise(rows: list[dict]) -> dict:
    def agg(rs):
        hits = sum(bool(r["hit"]) for r in rs)
        return {"instruction_accuracy": hits / len(rs), "hits": hits,
                "accuracy_interval": list(metrics.accuracy_interval(hits, len(rs))),
                "psnr_to_target": metrics.mean_or_none(r["psnr_to_target"] for r in rs),
                "psnr_to_reference": metrics.mean_or_none(r["psnr_to_reference"] for r in rs),
                "psnr_to_full": metrics.mean_or_none(r["psnr_to_full"] for r in rs),
                "flicker_ratio": metrics.mean_or_none(r["flicker_ratio"] for r in rs), "n": len(rs)}
    out = agg(rows)
    out["per_edit"] = {e: agg([r for r in rows if r["edit"] == e]) for e in dict.fromkeys(r["edit"] for r in rows)}
    out["per_split"] = {s: agg([r for r in rows if r["split"] == s]) for s in dict.fromkeys(r["split"] for r in rows)}
    out["rows"] = rows
    return out


def print_table(report: dict, file=sys.stdout) -> None:
    cols = ("instruction_accuracy", "psnr_to_target", "psnr_to_reference", "psnr_to_full", "flicker_ratio")
    fmt = lambda v: "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)
    print(f"{'variant':<28}" + "".join(f"{c:>21}" for c in cols), file=file)
    for name, r in report["variants"].items():
        print(f"{name:<28}" + "".join(f"{fmt(r[c]):>21}" for c in cols), file=file)
        for s, rs in r["per_split"].items():
            print(f"  paraphrases {s:<14}" + "".join(f"{fmt(rs[c]):>21}" for c in cols), file=file)
    print("\nhits (95% Wilson interval; paired: tasks gained / lost against the other, exact McNemar p):", file=file)
    for name, r in report["variants"].items():
        lo, hi = r["accuracy_interval"]
        paired = [f"vs {other} +{r[key]['gained']} / -{r[key]['lost']} (p {r[key]['p_value']:.2f})"
                  for key, other in paired_partners(name, report["variants"], REFERENCE)]
        print(f"  {name:<26} {r['hits']}/{r['n']} [{100 * lo:.1f}, {100 * hi:.1f}]%  " + "; ".join(paired), file=file)
    for name, r in report["variants"].items():
        print(f"\nper edit, {name}:", file=file)
        for e, rs in r["per_edit"].items():
            print(f"  {e:<26}" + "".join(f"{fmt(rs[c]):>21}" for c in cols), file=file)
    for name, axes in (report.get("sweep") or {}).items():
        for axis, r in axes.items():
            print(f"\nsweep {name} s_{axis[0].upper()} {r['values']}: instruction accuracy "
                  f"{fmt_curve(r['instruction_accuracy'])}", file=file)
            for metric, c in {r["metric"]: r, **r["also"]}.items():
                print(f"  {metric:<20} {fmt_curve(c['mean_curve'])}, spearman mean {c['spearman_mean']:.3f}, "
                      f"of the mean curve {c['spearman_of_mean_curve']:.3f}", file=file)
    ae = report["autoencoder_psnr"]
    print(f"\nautoencoder_psnr: {fmt(ae['mean'])} dB  " + ", ".join(f"{k} {v:.2f}" for k, v in ae["per_clip"].items()),
          file=file)
    print("bicubic 4x down-up of the same frames (how much fine detail each clip holds): "
          + ", ".join(f"{k} {v:.2f}" for k, v in ae["bicubic_x4_per_clip"].items()), file=file)
    print("autoencoder_psnr on the targets (the ceiling of psnr_to_target): "
          + ", ".join(f"{k} {v:.2f}" for k, v in ae["per_family"].items()), file=file)
    ex = ae["exact_edit"]
    misses = [f"{r['clip']}:{r['edit']}->{r['nearest']}" for r in ex["rows"] if not r["hit"]]
    print(f"exact edit through the autoencoder (reference level): instruction_accuracy {ex['instruction_accuracy']:.3f} "
          f"({sum(r['hit'] for r in ex['rows'])}/{ex['n']}), psnr_to_target {fmt(ex['psnr_to_target'])} dB; "
          f"misses: {', '.join(misses) or 'none'}", file=file)


def fmt_curve(values) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in values) + "]"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=Path, help="folder of video files")
    p.add_argument("--json", type=Path, help="write the report here")
    p.add_argument("--model", default=None, help="embedded family folder (default) or InstructPix2Pix hub id/folder")
    p.add_argument("--size", type=int, default=256, help="short side of the working size")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--steps", type=int, default=None, help="default: the family's")
    p.add_argument("--text-guidance", type=float, default=None)
    p.add_argument("--image-guidance", type=float, default=None)
    p.add_argument("--variants", default=None, help="comma-separated; default: every available variant")
    p.add_argument("--edits", default=None, help="comma-separated family ids; default: all")
    p.add_argument("--paraphrases", choices=("seen", "held-out", "all"), default="all")
    p.add_argument("--instructions", type=Path, default=None, help="JSON {family id: text or [texts]}")
    p.add_argument("--list-edits", action="store_true", help="print the family ids and paraphrases, then exit")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clock", type=int, default=DEFAULT_CLOCK, help="Clockwork variants: full UNet every clock-th step")
    p.add_argument("--cache", type=Path, default=None,
                   help="reuse outputs saved here by earlier runs (keyed by weights, frames and settings)")
    p.add_argument("--sweep", action="store_true", help="also measure controllability along s_T and s_I sweeps")
    p.add_argument("--sweep-tasks", type=int, default=12, help="(clip, edit) tasks in the sweep, spread evenly")
    p.add_argument("--sweep-frames", type=int, default=4, help="frames per clip in the sweep")
    p.add_argument("--sweep-axes", default="text,image", help="comma-separated sliders to sweep: text, image")
    p.add_argument("--sweep-text", type=float, nargs="+", default=SWEEP_TEXT, metavar="S_T",
                   help=f"s_T values of the sweep (default {' '.join(map(str, SWEEP_TEXT))})")
    p.add_argument("--sweep-image", type=float, nargs="+", default=SWEEP_IMAGE, metavar="S_I",
                   help=f"s_I values of the sweep (default {' '.join(map(str, SWEEP_IMAGE))})")
    a = p.parse_args(argv)
    if not a.list_edits and a.clips is None:
        p.error("--clips is required")
    a.sweep_axes = [x.strip() for x in a.sweep_axes.split(",") if x.strip()]
    if not a.sweep_axes or set(a.sweep_axes) - set(SWEEP_AXES):
        p.error(f"--sweep-axes takes {' and/or '.join(SWEEP_AXES)}, got {','.join(a.sweep_axes) or 'nothing'}")
    for name in ("sweep_text", "sweep_image"):
        values = getattr(a, name)
        if len(values) < 3 or sorted(set(values)) != list(values):
            p.error(f"--{name.replace('_', '-')} takes at least 3 increasing values, got {values}")
    return a


def list_edits() -> None:
    for fam in edits.FAMILIES.values():
        print(fam.id)
        for i, para in enumerate(fam.paraphrases):
            print(f"    [{'seen' if i < N_SEEN else 'held-out'}] {para}")


def load_sources(clips: list[Path], size: int, frames: int, multiple: int) -> dict[str, np.ndarray]:
    return {c.name: video_io.read_clip(c, short_side=size, max_frames=frames, multiple=multiple).frames for c in clips}


def main(argv=None) -> dict | None:
    a = parse_args(argv)
    if a.list_edits:
        list_edits()
        return None
    family = load_family(a.model)
    editor = Editor(family)
    custom = json.loads(a.instructions.read_text()) if a.instructions else None
    fams = a.edits.split(",") if a.edits else (list(custom) if custom else list(edits.FAMILIES))
    for f in fams:
        edits.get_family(f)
    variants = a.variants.split(",") if a.variants else available_variants(family)
    sources = load_sources(list_clips(a.clips), a.size, a.frames, family.size_multiple)
    tasks = make_tasks(list(sources), fams, a.paraphrases, custom)
    base = EditRequest.from_settings("(each task's instruction)", family=family, s_t=a.text_guidance,
                                     s_i=a.image_guidance, steps=a.steps, seed=a.seed, clock=a.clock)
    guidance, steps = base.guidance, base.steps
    run = EditRunner(editor, a.cache)
    outputs, seconds = run_tasks(run, tasks, sources, variants, base)
    targets = {clip: edits.all_targets(frames, a.seed) for clip, frames in sources.items()}
    report = {"settings": {"clips": str(a.clips), "size": a.size, "frames": a.frames, "steps": steps,
                           "guidance": {"text": guidance.text, "image": guidance.image}, "seed": a.seed,
                           "clock": a.clock,
                           "paraphrases": a.paraphrases, "instructions": str(a.instructions) if custom else None,
                           "model": family.name, "model_source": model_source(a.model)},
              "variants": score(outputs, tasks, targets, REFERENCE if REFERENCE in variants else None),
              "autoencoder_psnr": autoencoder_psnr(family, sources, targets, fams, a.seed), "seconds": seconds}
    if a.sweep:
        picked = spread(tasks, a.sweep_tasks)
        grid = {"text": tuple(a.sweep_text), "image": tuple(a.sweep_image)}
        report["sweep"] = {v: run_sweep(run, picked, sources, replace(base, variant=v), a.sweep_frames, a.seed,
                                        a.sweep_axes, grid)
                           for v in variants}
    report["cached_outputs"] = run.hits
    print_table(report)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(report, indent=1))
    return report


def run_tasks(run: EditRunner, tasks, sources, variants, base: EditRequest):
    """Every variant on every task with ``base``'s settings; returns the outputs and the seconds per variant
    (cached outputs count as no time)."""
    outputs, seconds = {}, {v: 0.0 for v in variants}
    for t in tqdm(tasks, desc="edits"):
        for v in variants:
            t0 = time.perf_counter()
            req = replace(base, instruction=t.instruction, variant=v)
            outputs[(v, t)] = run(sources[t.clip], req)
            seconds[v] += time.perf_counter() - t0
    return outputs, seconds


def spread(items: list, n: int) -> list:
    """``n`` items spread evenly over ``items`` (all of them when there are at most ``n``)."""
    if n >= len(items):
        return list(items)
    return [items[round(i * (len(items) - 1) / max(n - 1, 1))] for i in range(n)]


def run_sweep(run: EditRunner, tasks, sources, base: EditRequest, frames: int, seed: int,
              which=tuple(SWEEP_AXES), grid: dict | None = None) -> dict:
    """Controllability of ``base.variant`` along ``SWEEP_TEXT`` and ``SWEEP_IMAGE`` (or the values ``grid`` gives per
    slider; only the sliders named in ``which``): every metric of ``SWEEP_AXES`` per task and swept value, their
    Spearman correlations with the slider, and the instruction accuracy at every swept value (is the default slider
    where the model edits best?)."""
    axes = {k: ((grid or {}).get(k, values), named) for k, (values, named) in SWEEP_AXES.items() if k in which}
    targets = {clip: edits.all_targets(sources[clip][:frames], seed) for clip in {t.clip for t in tasks}}
    out = {}
    for axis, (values, named) in axes.items():
        curves, hits = {name: [] for name in named}, []
        for t in tqdm(tasks, desc=f"sweep {base.variant} s_{axis[0].upper()}"):
            src, tgt = sources[t.clip][:frames], targets[t.clip][t.family]
            reqs = [replace(base, instruction=t.instruction, guidance=replace(base.guidance, **{axis: v}))
                    for v in values]
            outs = [run(src, r) for r in reqs]
            for name, metric in named.items():
                curves[name].append([metric(o, src, tgt) for o in outs])
            hits.append([metrics.instruction_hit(o, t.family, targets[t.clip]) for o in outs])
        first, *rest = named
        out[axis] = {"values": list(values), "metric": first, **correlations(values, curves[first]),
                     "instruction_accuracy": np.mean(hits, axis=0).tolist(),
                     "tasks": [{"clip": t.clip, "edit": t.family, "instruction": t.instruction,
                                "curve": curves[first][i], "also": {n: curves[n][i] for n in rest}}
                               for i, t in enumerate(tasks)],
                     "also": {n: correlations(values, curves[n]) for n in rest}}
    return out


def correlations(values, curves: list[list[float]]) -> dict:
    """The mean curve, the Spearman correlation of each task's curve with ``values``, their mean, and that of the mean
    curve."""
    mean_curve = np.mean(curves, axis=0).tolist()
    per_task = [metrics.spearman(values, c) for c in curves]
    return {"mean_curve": mean_curve, "spearman_mean": float(np.mean(per_task)), "spearman_per_task": per_task,
            "spearman_of_mean_curve": metrics.spearman(values, mean_curve)}


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
