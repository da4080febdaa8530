"""fp16 storage of a family's weights (``editor.eval.precision``): stored in fp16, loaded back as fp32 for compute."""
from __future__ import annotations

import torch

from editor.eval import precision
from editor.loading import load_family


def test_fp16_stored_weights_load_as_float32(tiny_family_dir, tmp_path):
    half_dir = precision.fp16_copy(tiny_family_dir, ["unet", "autoencoder"], tmp_path / "half")
    assert precision.stored_dtypes(half_dir / "unet") == {"torch.float16"}
    fam = load_family(half_dir)
    for model in (fam.unet, fam.autoencoder):
        assert {p.dtype for p in model.parameters()} == {torch.float32}
    full = load_family(tiny_family_dir)
    w32, w16 = next(full.unet.parameters()), next(fam.unet.parameters())
    assert torch.equal(w16, w32.half().float())


def test_measure_reports_each_folder_near_identical(tiny_family_dir, moving_frames):
    result = precision.measure(moving_frames[:2], tiny_family_dir, ["unet", "autoencoder"], steps=2)
    assert set(result) == {"unet", "autoencoder"}
    assert all(db > 30.0 for db in result.values())
