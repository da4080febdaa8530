"""Storage precision of a family's weights: does storing a model's safetensors in fp16 keep its edits?

The weights are stored in fp16 and loaded back into fp32 for compute (diffusers' ``from_pretrained`` casts to the
default dtype; :func:`editor.loading.load_family` casts to the dtype asked for). Storage rounds every weight to 11
significant bits once; the check edits a clip with the fp32-stored family and with a copy in which one model folder
is fp16-stored, and reports the PSNR between the two outputs (100 dB = identical frames). The autoencoder is checked
on its reconstruction instead. A model passes at ``THRESHOLD_DB`` or more (docs/DESIGN.md section 5).

    python -m editor.eval.precision --clip data/samples/lion.mp4 --frames 4 [--json out.json]
    python -m editor.eval.precision --convert data/models/embedded --folders unet,student_mmg
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from editor import video_io
from editor.clockwork import DEFAULT_CLOCK
from editor.eval import metrics
from editor.layout import frames_to_images, images_to_frames
from editor.loading import EMBEDDED, load_family
from editor.pipeline import Editor, EditRequest
from editor.world import edits

THRESHOLD_DB = 40.0
WEIGHTS = "diffusion_pytorch_model.safetensors"
# model folder -> the variant and clock whose output it changes (None: the autoencoder's reconstruction)
CHECKS = {
    "unet": ("teacher", DEFAULT_CLOCK),
    "student_mmg": ("mmg", DEFAULT_CLOCK),
    "student_onestep": ("onestep", DEFAULT_CLOCK),
    "clockwork_mmg": ("mmg+clockwork", DEFAULT_CLOCK),
    "clockwork_mmg_clock4": ("mmg+clockwork", 4),
    "clockwork_teacher": ("teacher+clockwork", DEFAULT_CLOCK),
    "autoencoder": None,
}
EDITS = ("sunset", "cartoon")  # a colour edit and a structural one, each worded by its first seen paraphrase


def store_fp16(folder: str | Path) -> None:
    """Rewrite ``folder``'s safetensors with every floating tensor in fp16 (in place)."""
    path = Path(folder) / WEIGHTS
    tensors = load_file(path)
    save_file({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, path,
              metadata={"format": "pt"})


def stored_dtypes(folder: str | Path) -> set[str]:
    """The dtypes of the floating tensors in ``folder``'s safetensors."""
    return {str(v.dtype) for v in load_file(Path(folder) / WEIGHTS).values() if v.is_floating_point()}


def fp16_copy(family: str | Path, folders: list[str], out: str | Path) -> Path:
    """A copy of the family folder at ``out`` with ``folders`` stored in fp16."""
    out = Path(out)
    shutil.copytree(family, out, dirs_exist_ok=True)
    for name in folders:
        store_fp16(out / name)
    return out


def edit(family, frames: np.ndarray, fid: str, variant: str, clock: int, steps: int) -> np.ndarray:
    request = EditRequest.from_settings(edits.FAMILIES[fid].instructions("seen")[0], variant, family=family,
                                        steps=steps, clock=clock)
    return Editor(family).edit_frames(frames, request).frames


def reconstruct(family, frames: np.ndarray) -> np.ndarray:
    return images_to_frames(family.decode(family.encode(frames_to_images(frames))))


def outputs(family, frames: np.ndarray, check, steps: int) -> list[np.ndarray]:
    """What one check compares: the edits of every ``EDITS`` family, or the reconstruction."""
    if check is None:
        return [reconstruct(family, frames)]
    variant, clock = check
    return [edit(family, frames, fid, variant, clock, steps) for fid in EDITS]


def measure(frames: np.ndarray, family_dir: str | Path = EMBEDDED, folders: list[str] | None = None,
            steps: int = 20) -> dict[str, float]:
    """Per model folder: the lowest PSNR (dB) between the fp32-stored and the fp16-stored family's outputs."""
    folders = [f for f in (folders or list(CHECKS)) if (Path(family_dir) / f / WEIGHTS).exists()]
    full = load_family(family_dir)
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in folders:
            half = load_family(fp16_copy(family_dir, [name], Path(tmp) / name))
            pairs = zip(outputs(full, frames, CHECKS[name], steps), outputs(half, frames, CHECKS[name], steps))
            result[name] = min(metrics.psnr(a, b) for a, b in pairs)
    return result


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=EMBEDDED, help="embedded family folder")
    p.add_argument("--clip", type=Path, default=EMBEDDED.parents[1] / "samples" / "lion.mp4")
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--folders", default=None, help="comma-separated model folders (default: every checked one)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--convert", action="store_true", help="store --folders of --model in fp16, in place")
    return p.parse_args(argv)


def main(argv=None) -> None:
    a = _args(argv)
    folders = a.folders.split(",") if a.folders else None
    if a.convert:
        for name in folders or list(CHECKS):
            store_fp16(a.model / name)
            print(f"{a.model / name}: stored as {', '.join(sorted(stored_dtypes(a.model / name)))}")
        return
    torch.manual_seed(0)
    frames = video_io.read_clip(a.clip, max_frames=a.frames, multiple=32).frames
    result = measure(frames, a.model, folders, a.steps)
    for name, db in result.items():
        print(f"{name:22s} {db:7.2f} dB  {'pass' if db >= THRESHOLD_DB else 'FAIL'}")
    if a.json:
        a.json.write_text(json.dumps({"clip": str(a.clip), "frames": a.frames, "steps": a.steps, "edits": EDITS,
                                      "threshold_db": THRESHOLD_DB, "psnr_db": result}, indent=1))


if __name__ == "__main__":
    main()
