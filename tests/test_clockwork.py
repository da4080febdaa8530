"""Clockwork Diffusion (arXiv 2312.08128): known-answer tests of the UNet split, the schedule and the adaptors."""
from __future__ import annotations

import math

import pytest
import torch

from editor.clockwork import (ClockworkConfig, ClockworkDenoiser, ClockworkUNet, IdentityAdaptor, ResNetAdaptor,
                              high_res_in, high_res_out, low_res_middle, middle_out_size, needs_upsample_size,
                              schedule_counts, split_forward, step_flops, time_embedding)
from editor.cross_frame_attention import apply_cross_frame_attention
from editor.family import TeacherConfig
from editor.guidance import Conditioning, Guidance, ThreePassGuidance, unet_kwargs
from editor.sampling import initial_noise, sample

TEXT_DIM = 384


@pytest.fixture(scope="module")
def unet3():
    """A tiny UNet with the teacher's 3-level layout (DownBlock2D + 2 CrossAttnDownBlock2D), cross-frame attention."""
    torch.manual_seed(1)
    unet = TeacherConfig(latent_channels=4, block_out_channels=(16, 16, 32), norm_num_groups=8,
                         attention_head_dim=8, sample_size=8).build().eval()
    apply_cross_frame_attention(unet)
    return unet


@pytest.fixture(scope="module")
def unets(tiny_family, unet3):
    return {"tiny2": tiny_family.unet, "tiny3": unet3}


def _inputs(unet, b=2, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, unet.config.in_channels, h, w, generator=g)
    text = torch.randn(b, 5, TEXT_DIM, generator=g)
    return x, torch.full((b,), 700), text


def _cond(n=2, h=8, w=8, anchor=None, seed=0, guidance=Guidance(7.5, 1.5)):
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(2, 5, TEXT_DIM, generator=g)
    return Conditioning(source=torch.randn(n, 4, h, w, generator=g), text=text[:1].expand(n, -1, -1),
                        empty=text[1:].expand(n, -1, -1), guidance=guidance, anchor=anchor)


# --- the split ---------------------------------------------------------------------------------------------------

# 9 x 13 and 10 x 14 are not multiples of 2 ** num_upsamplers: diffusers forwards upsample_size
SIZES = [(12, 20), (10, 14), (9, 13)]


@pytest.mark.parametrize("name", ["tiny2", "tiny3"])
@pytest.mark.parametrize("size", SIZES)
def test_split_forward_equals_the_unet(unets, name, size):
    unet = unets[name]
    x, t, text = _inputs(unet, 3, *size)
    kw = unet_kwargs(3, 1, 0)  # frame layout through to the cross-frame attention processors
    levels = range(0, len(unet.down_blocks) + 1)
    with torch.no_grad():
        ref = unet(x, t, text, **kw).sample
        for level in levels:
            got = split_forward(unet, x, t, text, split_level=level, **kw)
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5, msg=f"split_level {level}")


def test_sizes_cover_the_upsample_size_path(unets):
    for unet in unets.values():
        assert not needs_upsample_size(unet, (12, 20)) and needs_upsample_size(unet, (9, 13))
    assert needs_upsample_size(unets["tiny3"], (10, 14))


@pytest.mark.parametrize("name", ["tiny2", "tiny3"])
def test_split_forward_given_the_true_middle_output(unets, name):
    unet = unets[name]
    x, t, text = _inputs(unet, 2, 10, 14)
    with torch.no_grad():
        ref = unet(x, t, text).sample
        emb = time_embedding(unet, t, x)
        r_in, skips = high_res_in(unet, x, emb, text)
        r_out = low_res_middle(unet, r_in, emb, text, out_size=middle_out_size(unet, x, skips))
        torch.testing.assert_close(high_res_out(unet, r_out, skips, emb, text), ref, atol=1e-5, rtol=1e-5)
        seen = []
        got = split_forward(unet, x, t, text, middle=lambda r: seen.append(r) or r_out)
    assert torch.equal(seen[0], r_in)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert r_out.shape[2:] == skips[-1].shape[2:] and r_out.shape[1] == unet.config.block_out_channels[1]


def _unet_with_timestep_cond():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(sample_size=8, in_channels=8, out_channels=4, block_out_channels=(16, 32),
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), layers_per_block=1,
                                cross_attention_dim=TEXT_DIM, attention_head_dim=8, norm_num_groups=8,
                                time_cond_proj_dim=4).eval()


def test_timestep_cond_reaches_the_time_embedding():
    torch.manual_seed(0)
    unet = _unet_with_timestep_cond()
    x, t, text = _inputs(unet, 2, 8, 8)
    cond = torch.randn(2, 4)
    with torch.no_grad():
        ref = unet(x, t, text, timestep_cond=cond).sample
        got = split_forward(unet, x, t, text, timestep_cond=cond)
        assert not torch.allclose(ref, unet(x, t, text).sample)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


# --- the schedule --------------------------------------------------------------------------------------------------

def _edit(model, tiny_family, cond, steps, seed=0, h=8, w=8):
    x = initial_noise((4, h, w), seed, cond.source.shape[0])
    return sample(model, x, cond, tiny_family.scheduler, steps)


def test_clock_one_is_plain_sampling(tiny_family, unet3):
    c = _cond(anchor=1)
    for unet in (tiny_family.unet, unet3):
        ref = _edit(ThreePassGuidance(unet), tiny_family, c, 2)
        got = _edit(ClockworkDenoiser(unet, ClockworkConfig(clock=1)), tiny_family, c, 2)
        torch.testing.assert_close(got, ref, atol=0, rtol=0)  # bit-identical


@pytest.mark.parametrize("clock", [2, 3, 4])
def test_full_and_adaptor_pass_counts(tiny_family, clock):
    model = ClockworkDenoiser(tiny_family.unet, ClockworkConfig(clock=clock))
    _edit(model, tiny_family, _cond(n=1), 8)
    cw = model.clockwork
    assert cw.full_passes == math.ceil(8 / clock) and cw.adaptor_passes == 8 - cw.full_passes
    assert (cw.full_passes, cw.adaptor_passes) == schedule_counts(8, clock) and model.passes_per_step == 3


def test_adaptor_step_reuses_the_previous_low_res_output(unet3):
    """Identity adaptor, clock 2: step 1 is the split forward with step 0's ``r_out`` as the middle."""
    cw = ClockworkUNet(unet3, ClockworkConfig(clock=2))
    x0, t0, text = _inputs(unet3, 2, 10, 14, seed=0)
    x1 = _inputs(unet3, 2, 10, 14, seed=1)[0]
    with torch.no_grad():
        cw(x0, t0, text)
        r_out0 = cw._r_out
        got = cw(x1, t0 - 100, text).sample
        ref = split_forward(unet3, x1, t0 - 100, text, middle=lambda r: r_out0)
        plain = unet3(x1, t0 - 100, text).sample
    torch.testing.assert_close(got, ref, atol=0, rtol=0)
    assert not torch.allclose(got, plain, atol=1e-4)
    assert (cw.full_passes, cw.adaptor_passes) == (1, 1)


def test_state_does_not_carry_over_between_clips(tiny_family):
    cfg = ClockworkConfig(clock=2)
    ca, cb = _cond(n=1, seed=1), _cond(n=1, seed=2)
    alone_a = _edit(ClockworkDenoiser(tiny_family.unet, cfg), tiny_family, ca, 3, seed=1)
    alone_b = _edit(ClockworkDenoiser(tiny_family.unet, cfg), tiny_family, cb, 3, seed=2)
    model = ClockworkDenoiser(tiny_family.unet, cfg)
    torch.testing.assert_close(_edit(model, tiny_family, ca, 3, seed=1), alone_a, atol=0, rtol=0)
    with pytest.raises(ValueError, match="reset"):
        _edit(model, tiny_family, cb, 3, seed=2)  # same wrapper, no reset: refused, not silently mixed
    model.reset()
    torch.testing.assert_close(_edit(model, tiny_family, cb, 3, seed=2), alone_b, atol=0, rtol=0)
    model.reset()
    with pytest.raises(ValueError, match="batch shape"):
        model.clockwork(*_inputs(tiny_family.unet, 2))
        model.clockwork(*_inputs(tiny_family.unet, 3))


def test_wrapper_passes_the_unet_attributes_through(tiny_family):
    cw = ClockworkUNet(tiny_family.unet)
    assert cw.config is tiny_family.unet.config and cw.dtype == torch.float32 and cw.device.type == "cpu"
    with pytest.raises(ValueError, match="ResNetAdaptor"):
        ClockworkUNet(tiny_family.unet, ClockworkConfig(adaptor="trained"))
    with pytest.raises(ValueError):
        ClockworkConfig(clock=0)


# --- adaptors ------------------------------------------------------------------------------------------------------

def test_fresh_resnet_adaptor_is_the_identity(tiny_family, unet3):
    adaptor = ResNetAdaptor.for_unet(unet3).eval()
    c = _cond(h=10, w=14, anchor=0)
    runs = [_edit(ClockworkDenoiser(unet3, cfg, a), tiny_family, c, 4, h=10, w=14)
            for cfg, a in [(ClockworkConfig(clock=2), None), (ClockworkConfig(clock=2, adaptor="trained"), adaptor)]]
    torch.testing.assert_close(runs[1], runs[0], atol=0, rtol=0)
    r_in, r_prev, emb = torch.randn(2, 16, 5, 7), torch.randn(2, 16, 10, 14), torch.randn(2, 64)
    torch.nn.init.normal_(adaptor.conv_out.weight)
    out = adaptor(r_in, r_prev, emb)
    assert out.shape == r_prev.shape and not torch.allclose(out, IdentityAdaptor()(r_in, r_prev, emb))


def test_resnet_adaptor_round_trip(unet3, tmp_path):
    adaptor = ResNetAdaptor.for_unet(unet3, split_level=1, width=8)
    assert (adaptor.config.in_channels, adaptor.config.out_channels, adaptor.config.temb_channels) == (16, 16, 64)
    torch.nn.init.normal_(adaptor.conv_out.weight)
    adaptor.save_pretrained(tmp_path / "adaptor")
    assert (tmp_path / "adaptor" / "diffusion_pytorch_model.safetensors").exists()
    loaded = ResNetAdaptor.from_pretrained(tmp_path / "adaptor")
    public = lambda cfg: {k: v for k, v in cfg.items() if not k.startswith("_")}
    assert public(loaded.config) == public(adaptor.config) and loaded.config.width == 8
    args = torch.randn(1, 16, 3, 4), torch.randn(1, 16, 5, 7), torch.randn(1, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(*args), adaptor(*args), atol=1e-5, rtol=1e-5)


# --- cost ----------------------------------------------------------------------------------------------------------

def test_adaptor_steps_cost_less(unet3):
    for adaptor in (IdentityAdaptor(), ResNetAdaptor.for_unet(unet3)):
        f = step_flops(unet3, adaptor, (1, 8, 16, 16))
        assert 0 < f.adaptor < f.full
        assert f.ratio(8, 1) == 1 and f.ratio(8, 2) < 1


# --- trained adaptor (editor.train.clockwork) ------------------------------------------------------------------------

def test_training_unroll_is_the_inference_trajectory(tiny_family, unet3):
    """With a fresh (identity-equal) adaptor, the training unroll follows inference exactly, records one loss per
    adaptor step, and the adaptor's loss equals the identity baseline's."""
    from editor.train.clockwork import AdaptorTrainingUNet

    adaptor = ResNetAdaptor.for_unet(unet3)
    cfg = ClockworkConfig(clock=3, adaptor="trained")
    c = _cond(h=10, w=14)
    trainer = AdaptorTrainingUNet(unet3, cfg, adaptor)
    got = _edit(ThreePassGuidance(trainer), tiny_family, c, 7, h=10, w=14)
    ref = _edit(ClockworkDenoiser(unet3, ClockworkConfig(clock=3)), tiny_family, c, 7, h=10, w=14)
    torch.testing.assert_close(got, ref, atol=0, rtol=0)
    assert len(trainer.losses) == schedule_counts(7, 3)[1] == trainer.adaptor_passes
    assert all(loss.requires_grad for loss in trainer.losses)
    torch.testing.assert_close(torch.stack(trainer.losses).detach(), torch.stack(trainer.identity_losses))
    assert float(torch.stack(trainer.losses).detach().sum()) > 0  # the middle's output does move between steps


def test_prediction_loss_is_the_guided_prediction_error(unet3):
    """``head`` = Eq. 1: with a fresh (identity-equal) adaptor, the one loss of a clock-2 pair of steps is the MSE
    between the identity Clockwork teacher's guided prediction and the full UNet's, and it has a graph."""
    from editor.train.clockwork import AdaptorTrainingUNet, prediction_head

    c = _cond(h=8, w=8)
    x0, x1 = torch.randn(2, 2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    t0, t1 = torch.full((2,), 900), torch.full((2,), 700)
    trainer = AdaptorTrainingUNet(unet3, ClockworkConfig(clock=2, adaptor="trained"), ResNetAdaptor.for_unet(unet3),
                                  prediction_head(ThreePassGuidance, c.guidance))
    with torch.no_grad():
        teacher = ThreePassGuidance(trainer)
        teacher(x0, t0, c)
        got = teacher(x1, t1, c)
        identity = ClockworkDenoiser(unet3, ClockworkConfig(clock=2))
        identity(x0, t0, c)
        want = identity(x1, t1, c)
        full = ThreePassGuidance(unet3)(x1, t1, c)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)  # the trajectory still follows inference
    assert len(trainer.losses) == 1 and trainer.losses[0].requires_grad
    torch.testing.assert_close(trainer.losses[0].detach(), (want - full).pow(2).mean(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(trainer.identity_losses[0], (want - full).pow(2).mean(), atol=1e-6, rtol=1e-5)
    assert float(trainer.losses[0].detach()) > 0  # stale features do change the guided prediction


@pytest.mark.parametrize("serve", ["teacher", "mmg"])
def test_train_clockwork_two_steps(tmp_path, tiny_family_dir, serve):
    """Two steps of adaptor training for each served model (the teacher's with the loss on its guided prediction);
    the family then offers the ``+clockwork`` variant."""
    import json
    import shutil

    from diffusers import UNet2DConditionModel

    from editor.loading import load_family
    from editor.mmg import student_from_teacher
    from editor.pipeline import EditRequest, Editor
    from editor.train import clockwork as train_clockwork
    from editor.variants import available_variants

    fam = tmp_path / "fam"
    shutil.copytree(tiny_family_dir, fam)
    if serve == "mmg":
        student_from_teacher(UNet2DConditionModel.from_pretrained(fam / "unet")).save_pretrained(fam / "student_mmg")
    loss = ["--loss", "prediction"] if serve == "teacher" else []
    mix = ["--step-choices", "4", "5", "--clock-choices", "3"] if serve == "mmg" else []
    train_clockwork.main(["--serve", serve, "--out", str(tmp_path / "run"), "--export", str(fam), "--steps", "2",
                          "--pool", "2", "--batch", "2", "--lr", "1e-2", *loss, *mix])
    rows = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [0, 1]
    if mix:  # every batch drew from the given mix, and the export records it
        assert {r["clock"] for r in rows if "loss" in r} == {3} and {r["steps"] for r in rows if "loss" in r} <= {4, 5}
        recorded = json.loads((fam / "clockwork_mmg" / "training.json").read_text())
        assert recorded["clock_choices"] == [3] and recorded["step_choices"] == [4, 5]
    assert all(r["loss"] >= 0 and r["identity_mse"] > 0 for r in rows if "loss" in r)
    assert json.loads((fam / f"clockwork_{serve}" / "training.json").read_text())["args"]["loss"] == (
        "prediction" if loss else "features")
    family = load_family(fam)
    assert serve in family.adaptors and f"{serve}+clockwork" in available_variants(family)
    assert torch.count_nonzero(family.adaptors[serve].conv_out.weight) > 0  # it learned something
    frames = (torch.rand(3, 32, 32, 3) * 255).to(torch.uint8).numpy()
    out = Editor(family).edit_frames(frames, EditRequest("make it sepia", steps=4, variant=f"{serve}+clockwork"))
    assert out.frames.shape == frames.shape
    if serve == "mmg":  # going on from the trained adaptor: it starts from those weights, not a fresh zero output
        trained = {k: v.clone() for k, v in family.adaptors[serve].state_dict().items()}
        (fam / "from").mkdir()
        shutil.move(str(fam / "clockwork_mmg"), fam / "from" / "clockwork_mmg")
        train_clockwork.main(["--serve", serve, "--out", str(tmp_path / "run2"), "--export", str(fam), "--steps", "1",
                              "--pool", "2", "--batch", "2", "--lr", "1e-12",
                              "--init-from", str(fam / "from" / "clockwork_mmg")])
        again = load_family(fam).adaptors[serve].state_dict()
        for k, v in trained.items():
            torch.testing.assert_close(again[k], v, atol=1e-6, rtol=0)
        # an adaptor built for another UNet is refused up front
        from editor.clockwork import ResNetAdaptor
        cfg = dict(family.adaptors[serve].config)
        wrong = ResNetAdaptor(**{k: cfg[k] for k in ("in_channels", "out_channels", "width", "norm_num_groups",
                                                     "norm_eps", "split_level")}, temb_channels=cfg["temb_channels"] + 8)
        wrong.save_pretrained(fam / "wrong")
        with pytest.raises(SystemExit, match="do not fit"):
            train_clockwork.main(["--serve", serve, "--out", str(tmp_path / "run3"), "--export", str(fam), "--steps", "1",
                                  "--pool", "2", "--batch", "2", "--init-from", str(fam / "wrong")])


@pytest.mark.parametrize("mix", [["--clock-choices", "1"], ["--step-choices", "8", "1"]])
def test_train_clockwork_refuses_a_mix_without_adaptor_steps(tmp_path, capsys, mix):
    """Clock 1 (or a 1-step schedule) never runs the adaptor, so there would be nothing to learn: a usage error."""
    from editor.train import clockwork as train_clockwork

    with pytest.raises(SystemExit) as e:
        train_clockwork.main(["--out", str(tmp_path / "run"), "--export", str(tmp_path / "fam"), *mix])
    assert e.value.code == 2 and "at least 2" in capsys.readouterr().err


def test_a_clock_specialist_adaptor_runs_at_its_clock_only(tiny_family_dir, tmp_path):
    """``--per-clock`` exports ``clockwork_mmg_clock<C>/``; the engine runs it at clock C and the adaptor for every
    clock elsewhere, and the evaluator's cache tells the two apart (it hashes the adaptor that actually runs)."""
    import json
    import shutil

    import numpy as np
    from diffusers import UNet2DConditionModel

    from editor.eval.evaluate import EditRunner
    from editor.loading import load_family
    from editor.mmg import student_from_teacher
    from editor.pipeline import EditRequest, Editor
    from editor.train import clockwork as train_clockwork
    from editor.variants import get_variant

    fam = tmp_path / "fam"
    shutil.copytree(tiny_family_dir, fam)
    student = student_from_teacher(UNet2DConditionModel.from_pretrained(fam / "unet"))
    student.save_pretrained(fam / "student_mmg")
    ResNetAdaptor.for_unet(student).save_pretrained(fam / "clockwork_mmg")  # the adaptor for every clock
    train_clockwork.main(["--serve", "mmg", "--out", str(tmp_path / "run"), "--export", str(fam), "--steps", "1",
                          "--pool", "2", "--batch", "2", "--lr", "1e-2", "--clock-choices", "3", "--per-clock"])
    assert json.loads((fam / "clockwork_mmg_clock3" / "training.json").read_text())["clock_choices"] == [3]
    family = load_family(fam)
    assert set(family.adaptors) == {"mmg", "mmg_clock3"}
    v = get_variant("mmg+clockwork")
    assert v.adaptor(family, 3) is family.adaptors["mmg_clock3"]
    assert v.adaptor(family, 2) is family.adaptors["mmg"] and v.adaptor(family) is family.adaptors["mmg"]
    runner = EditRunner(Editor(family))
    assert runner.weights_hash(v.name, 3) != runner.weights_hash(v.name, 2) == runner.weights_hash(v.name, 4)
    # the specialist is what sampling at clock 3 runs: the same edit with it removed differs
    torch.nn.init.normal_(family.adaptors["mmg_clock3"].conv_out.weight, std=0.1)
    frames = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    req = EditRequest("make it sepia", steps=4, clock=3, variant=v.name)
    with_specialist = Editor(family).edit_frames(frames, req).frames
    del family.adaptors["mmg_clock3"]
    assert not np.array_equal(with_specialist, Editor(family).edit_frames(frames, req).frames)


def test_per_clock_needs_a_single_clock(tmp_path, capsys):
    from editor.train import clockwork as train_clockwork

    with pytest.raises(SystemExit) as e:
        train_clockwork.main(["--out", str(tmp_path / "run"), "--export", str(tmp_path / "fam"), "--per-clock",
                              "--clock-choices", "2", "4"])
    assert e.value.code == 2 and "single clock" in capsys.readouterr().err
