"""The one-step adversarial student (editor.onestep, editor.train.adversarial) on tiny random models."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from editor.guidance import Conditioning, Guidance
from editor.mmg import MMGDenoiser, student_from_teacher
from editor.onestep import STEP_OPTIONS, STUDENT_TIMESTEPS, Discriminator, DiscriminatorHeads, down_path_features, \
    hinge_d_loss, level_channels, predict_x0, r1_penalty, renoise_timesteps
from editor.sampling import make_scheduler, sample


@pytest.fixture(scope="module")
def student(tiny_family):
    torch.manual_seed(3)
    st = student_from_teacher(tiny_family.unet, embed_dim=16)
    with torch.no_grad():  # a non-zero scale path, so the scales matter
        st.time_embedding.cond_proj.weight.normal_(0, 0.5)
    return st.eval()


@pytest.fixture(scope="module")
def family_with_mmg(tmp_path_factory, tiny_family_dir, student):
    fam = tmp_path_factory.mktemp("onestep_family")
    shutil.copytree(tiny_family_dir, fam, dirs_exist_ok=True)
    student.save_pretrained(fam / "student_mmg")
    return fam


def _batch(b=2, seed=0, c=4, hw=8, text_dim=384):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, c, hw, hw, generator=g), torch.randn(b, c, hw, hw, generator=g),
            torch.randn(b, 5, text_dim, generator=g))


def test_student_timesteps_are_ddim_trailing_1_2_4_steps(tiny_family):
    sched = make_scheduler(tiny_family.scheduler.config)
    seen = set()
    for steps in STEP_OPTIONS:
        sched.set_timesteps(steps)
        seen |= {int(t) for t in sched.timesteps}
    assert seen == set(STUDENT_TIMESTEPS)


def test_predict_x0_at_999_is_one_ddim_step(tiny_family, student):
    noise, source, text = _batch()
    cond = Conditioning(source, text, text, Guidance(5.0, 2.0))
    want = sample(MMGDenoiser(student), noise, cond, tiny_family.scheduler, 1)
    with torch.no_grad():
        got = predict_x0(student, noise, torch.full((2,), 999), source, text, 5.0, 2.0, tiny_family.scheduler)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_down_path_features_are_the_unets_own(tiny_family):
    unet = tiny_family.unet
    noise, source, text = _batch()
    x, t = torch.cat([noise, source], 1), torch.tensor([10, 500])
    got = down_path_features(unet, x, t, text)
    captured = []
    hooks = [b.register_forward_hook(lambda m, i, o: captured.append(o[0] if isinstance(o, tuple) else o))
             for b in [*unet.down_blocks, unet.mid_block]]
    with torch.no_grad():
        unet(x, t, text)
    for h in hooks:
        h.remove()
    assert [f.shape[1] for f in got] == list(level_channels(unet))
    for f, c in zip(got, captured):
        torch.testing.assert_close(f, c)


@pytest.mark.parametrize("conditioned", [True, False])
def test_heads_see_the_guidance_scales_only_when_conditioned(tiny_family, conditioned):
    torch.manual_seed(0)
    heads = DiscriminatorHeads(level_channels(tiny_family.unet), text_dim=384, cond_dim=16,
                               scale_conditioned=conditioned, guidance_dim=16, norm_groups=4)
    noise, source, text = _batch()
    t = torch.tensor([100, 700])
    with torch.no_grad():
        feats = down_path_features(tiny_family.unet, torch.cat([noise, source], 1), t, text)
        a = heads(feats, t, text, torch.tensor([2.0, 2.0]), torch.tensor([1.0, 1.0]))
        b = heads(feats, t, text, torch.tensor([12.0, 12.0]), torch.tensor([3.0, 3.0]))
    assert a.shape[0] == 2 and a.shape[1] == sum(f.shape[-2] * f.shape[-1] for f in feats)
    assert (not torch.allclose(a, b)) == conditioned


def test_hinge_r1_and_detached_heads(tiny_family):
    torch.manual_seed(0)
    heads = DiscriminatorHeads(level_channels(tiny_family.unet), text_dim=384, cond_dim=16, guidance_dim=16,
                               norm_groups=4)
    disc = Discriminator(tiny_family.unet, heads, tiny_family.scheduler)
    noise, source, text = _batch()
    t = renoise_timesteps(2, torch.Generator().manual_seed(0))
    assert ((0 <= t) & (t < 1000)).all()
    real = noise.clone().requires_grad_(True)
    logits = disc.logits(disc.features(real, t, source, text, double_backward=True), t, text, 4.0, 1.5)
    r1 = r1_penalty(logits, real)
    r1.backward()
    assert r1 > 0 and any(p.grad is not None and p.grad.abs().sum() > 0 for p in heads.parameters())
    heads.zero_grad()
    frozen = {k: v.detach() for k, v in heads.named_parameters()}
    fake = noise.clone().requires_grad_(True)
    out = disc.logits(disc.features(fake, t, source, text), t, text, 4.0, 1.5, params=frozen)
    out.mean().backward()
    assert fake.grad.abs().sum() > 0 and all(p.grad is None for p in heads.parameters())
    assert float(hinge_d_loss(torch.full((3,), 2.0), torch.full((3,), -2.0))) == 0.0


@pytest.mark.parametrize("extra", [[], ["--unconditioned-heads", "--target-weight", "0.5"]],
                         ids=["conditioned", "unconditioned-with-target"])
def test_train_adversarial_two_steps_then_resume(tmp_path, family_with_mmg, extra):
    from editor.loading import load_family
    from editor.train import adversarial

    fam = tmp_path / "fam"
    shutil.copytree(family_with_mmg, fam)
    args = ["--out", str(tmp_path / "run"), "--export", str(fam), "--pool", "2", "--batch", "2", "--bank-size", "4",
            "--bank-steps", "2", "--r1-every", "2", *extra]
    adversarial.main(args + ["--steps", "2"])
    assert (tmp_path / "run" / "bank.pt").exists()
    info = json.loads((fam / "student_onestep" / "training.json").read_text())
    assert info["args"]["steps"] == 2 and info["weights"]["r1_every"] == 2
    rows = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [0, 1]
    assert "r1" in rows[0] and all(np.isfinite(r["loss"]) for r in rows if "loss" in r)
    adversarial.main(args + ["--steps", "3"])  # resumes at step 2 and reuses the bank
    assert [r["step"] for r in (json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text()
                                .splitlines()) if "loss" in r][-1] == 2
    family = load_family(fam)
    assert "student_onestep" in family.extras


def test_onestep_variant_makes_one_unet_pass_per_frame(tiny_family_dir, student, tmp_path, moving_frames):
    from editor.loading import load_family
    from editor.pipeline import Editor, EditRequest
    from editor.variants import get_variant

    fam = tmp_path / "fam"
    shutil.copytree(tiny_family_dir, fam)
    student.save_pretrained(fam / "student_onestep")
    family = load_family(fam)
    calls = []
    unet = family.extras["student_onestep"]
    hook = unet.register_forward_pre_hook(lambda m, a, kw: calls.append(len(kw.get("sample", a[0] if a else None))),
                                          with_kwargs=True)
    v = get_variant("onestep")
    assert v.available(family)
    frames = moving_frames[:4]
    result = Editor(family).edit_frames(frames, EditRequest("make it sepia", steps=20, variant="onestep"))
    hook.remove()
    assert result.unet_passes == 1 and sum(calls) == len(frames)
    assert result.frames.shape == frames.shape
    assert v.steps(EditRequest("x", steps=4, variant="onestep")) == 4
    assert v.steps(EditRequest("x", steps=20, variant="onestep")) == 1
