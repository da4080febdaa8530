"""Multimodal guidance distillation (MoViE section 3.4): the student's construction, denoiser, target and training."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from editor.guidance import Conditioning, Guidance, ThreePassGuidance, unet_kwargs
from editor.mmg import MMGDenoiser, guidance_embedding, mmg_target, mmg_targets, rebase_student, \
    student_from_teacher
from editor.sampling import make_scheduler, sample

SCALES = [(1.0, 1.0), (7.5, 1.5), (14.0, 3.0), (2.0, 2.7)]


def _inputs(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 4, 8, 8, generator=g)
    source = torch.randn(b, 4, 8, 8, generator=g)
    text = torch.randn(b, 5, 384, generator=g)
    empty = torch.randn(5, 384, generator=g)
    t = torch.tensor([900, 37])[:b]
    return x, t, source, text, empty


@pytest.fixture(scope="module")
def student(tiny_family):
    return student_from_teacher(tiny_family.unet)


def test_guidance_embedding_shape_and_distinct():
    e = guidance_embedding(torch.tensor([7.5, 7.5, 8.0, 7.5]), torch.tensor([1.5, 1.6, 1.5, 1.5]), 64)
    assert e.shape == (4, 64)
    assert torch.equal(e[0], e[3])
    assert not torch.allclose(e[0], e[1]) and not torch.allclose(e[0], e[2]) and not torch.allclose(e[1], e[2])
    # the text half moves with s_T only, the image half with s_I only
    assert torch.equal(e[0, 32:], e[2, 32:]) and not torch.equal(e[0, :32], e[2, :32])
    assert torch.equal(e[0, :32], e[1, :32]) and not torch.equal(e[0, 32:], e[1, 32:])
    assert guidance_embedding(3.0, 2.0, 16).shape == (1, 16)
    with pytest.raises(ValueError):
        guidance_embedding(3.0, 2.0, 15)


def test_student_config_and_zero_init(tiny_family, student):
    assert student.config.time_cond_proj_dim == 256
    assert student.time_embedding.cond_proj.bias is None
    assert torch.count_nonzero(student.time_embedding.cond_proj.weight) == 0
    assert {type(p) for p in student.attn_processors.values()} == \
        {type(p) for p in tiny_family.unet.attn_processors.values()}
    with pytest.raises(ValueError):
        student_from_teacher(student)


@pytest.mark.parametrize("s_t,s_i", SCALES)
def test_zero_init_student_is_teacher_conditional_branch(tiny_family, student, s_t, s_i):
    x, t, source, text, _ = _inputs()
    inp = torch.cat([x, source], 1)
    with torch.no_grad():
        ref = tiny_family.unet(inp, t, text).sample
        emb = guidance_embedding(torch.full((2,), s_t), torch.full((2,), s_i), 256)
        out = student(inp, t, text, timestep_cond=emb).sample
        # through the denoiser, with cross-frame attention on
        den = MMGDenoiser(student)(x, t, Conditioning(source, text, text, Guidance(s_t, s_i), anchor=1))
        ref_cf = tiny_family.unet(inp, t, text, **unet_kwargs(1, 2, 1)).sample
    assert torch.equal(out, ref)
    assert torch.equal(den, ref_cf)


def test_scales_reach_the_student_once_cond_proj_is_trained(tiny_family):
    s = student_from_teacher(tiny_family.unet)
    with torch.no_grad():
        s.time_embedding.cond_proj.weight.normal_(0, 0.5)
    x, t, source, text, empty = _inputs()
    den = MMGDenoiser(s)
    with torch.no_grad():
        a = den(x, t, Conditioning(source, text, empty, Guidance(7.5, 1.5)))
        b = den(x, t, Conditioning(source, text, empty, Guidance(12.0, 1.5)))
    assert a.shape == x.shape and not torch.allclose(a, b)


class _Counting(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet, self.calls, self.samples = unet, 0, 0

    @property
    def config(self):
        return self.unet.config

    def forward(self, sample, *args, **kwargs):
        self.calls += 1
        self.samples += sample.shape[0]
        return self.unet(sample, *args, **kwargs)


def test_one_pass_per_step_versus_three(tiny_family, student):
    steps, b = 3, 2
    x, _, source, text, empty = _inputs(b)
    cond = Conditioning(source, text, empty.expand_as(text), Guidance(7.5, 1.5), anchor=0)
    sched = make_scheduler(tiny_family.scheduler.config)
    s_unet, t_unet = _Counting(student), _Counting(tiny_family.unet)
    mmg, three = MMGDenoiser(s_unet), ThreePassGuidance(t_unet)
    assert mmg.passes_per_step == 1 and three.passes_per_step == 3
    sample(mmg, x, cond, sched, steps)
    sample(three, x, cond, sched, steps)
    assert s_unet.calls == t_unet.calls == steps
    assert s_unet.samples == steps * b
    assert t_unet.samples == 3 * s_unet.samples


def test_mmg_target_unit_scales_is_conditional_prediction(tiny_family):
    x, t, source, text, empty = _inputs()
    with torch.no_grad():
        cond = tiny_family.unet(torch.cat([x, source], 1), t, text).sample
    out = mmg_target(tiny_family.unet, x, t, source, text, empty, torch.ones(2), torch.ones(2))
    assert torch.allclose(out, cond, atol=1e-5)


def test_mmg_target_per_sample_scales_match_three_pass(tiny_family):
    x, t, source, text, empty = _inputs()
    s_t, s_i = torch.tensor([3.0, 11.0]), torch.tensor([1.2, 2.5])
    out = mmg_target(tiny_family.unet, x, t, source, text, empty, s_t, s_i)
    assert not out.requires_grad
    for k in range(2):
        c = Conditioning(source[k:k + 1], text[k:k + 1], empty[None], Guidance(float(s_t[k]), float(s_i[k])))
        with torch.no_grad():
            ref = ThreePassGuidance(tiny_family.unet)(x[k:k + 1], t[k:k + 1], c)
        assert torch.allclose(out[k:k + 1], ref, atol=1e-4), (out[k:k + 1] - ref).abs().max()  # batch-size rounding x s_T


def test_mmg_targets_equal_one_call_per_pair(tiny_family):
    """Several scale pairs from one teacher call give what one mmg_target call per pair gives."""
    x, t, source, text, empty = _inputs()
    pairs = [(torch.tensor([3.0, 11.0]), torch.tensor([1.2, 2.5])), (2.5, 1.5)]
    outs = mmg_targets(tiny_family.unet, x, t, source, text, empty, pairs)
    for (st, si), out in zip(pairs, outs):
        torch.testing.assert_close(out, mmg_target(tiny_family.unet, x, t, source, text, empty, st, si))


def test_image_pair_term_regresses_the_image_direction(tiny_family):
    """With the pair term the student's s_I -> s_I + 1 change is regressed on Eq. 1's image direction,
    e(x, c_I, 0) - e(x, 0, 0); the loss is the plain loss plus the weighted pair MSE."""
    from editor.train.common import noise_scheduler
    from editor.train.mmg import mmg_loss

    x, t, source, text, empty = _inputs()
    student = student_from_teacher(tiny_family.unet)
    s_t, s_i = torch.tensor([2.0, 9.0]), torch.tensor([1.0, 1.6])
    args = (student, tiny_family.unet, noise_scheduler(), x, source, text, empty, s_t, s_i)
    with torch.no_grad():
        plain = mmg_loss(*args, torch.Generator().manual_seed(0))
        paired = mmg_loss(*args, torch.Generator().manual_seed(0), image_pair_weight=0.5)
    assert "image_pair_mse" not in plain
    # the zero-initialised student ignores s_I, so its change is 0 and the pair MSE is the direction's power
    torch.testing.assert_close(paired["image_pair_mse"], paired["image_dir_rms"] ** 2)
    assert paired["image_dir_rms"] > 0
    # the pair term is added on top of the mean of the two scale settings' weighted MSEs
    assert paired["loss"] > paired["mse"] and torch.isfinite(paired["loss"])


@pytest.mark.parametrize("extra", [[], ["--image-pair-weight", "1.0", "--wording-mix", "0.5"]],
                         ids=["plain", "image-pairs-mixed-wordings"])
def test_train_mmg_two_steps(tmp_path, tiny_family_dir, extra):
    from editor.loading import load_family
    from editor.train import mmg

    fam = tmp_path / "fam"
    shutil.copytree(tiny_family_dir, fam)
    mmg.main(["--out", str(tmp_path / "run"), "--export", str(fam), "--steps", "2", "--pool", "2",
              "--batch", "4", "--crop", "4", "--full-every", "2", *extra])
    cfg = json.loads((fam / "student_mmg" / "config.json").read_text())
    assert cfg["time_cond_proj_dim"] == 256
    assert json.loads((fam / "student_mmg" / "training.json").read_text())["args"]["steps"] == 2
    rows = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 2 and all(v == v and v >= 0 for v in losses)
    family = load_family(fam)
    st = family.extras["student_mmg"]
    assert st.config.time_cond_proj_dim == 256
    assert torch.count_nonzero(st.time_embedding.cond_proj.weight) > 0  # the scale path got gradients
    x, t, source, text, empty = _inputs()
    with torch.no_grad():
        out = MMGDenoiser(st)(x, t, Conditioning(source, text, empty, Guidance(7.5, 1.5), anchor=1))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_inverse_square_weighting_balances_the_scales(tiny_family):
    """At s_T = 2 the weight is 1 (loss == MSE); at s_T = 4 a sample counts a quarter."""
    from editor.train.common import noise_scheduler
    from editor.train.mmg import mmg_loss

    x, t, source, text, empty = _inputs()
    student = student_from_teacher(tiny_family.unet)
    sched = noise_scheduler()
    terms = {}
    for s in (2.0, 4.0):
        s_t = torch.full((x.shape[0],), s)
        with torch.no_grad():
            terms[s] = mmg_loss(student, tiny_family.unet, sched, x, source, text, empty, s_t, torch.ones_like(s_t),
                                torch.Generator().manual_seed(0), "inverse-square")
    torch.testing.assert_close(terms[2.0]["loss"], terms[2.0]["mse"])
    torch.testing.assert_close(terms[4.0]["loss"], terms[4.0]["mse"] / 4)


def _perturbed(unet, seed):
    """A copy of ``unet`` with every weight moved by small noise (a "further trained" model)."""
    import copy

    out, g = copy.deepcopy(unet), torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    return out


def test_rebase_student_adds_the_distillation_delta_to_the_new_teacher(tiny_family):
    old_teacher = tiny_family.unet
    student = _perturbed(student_from_teacher(old_teacher), 1)  # "distilled": differs from its teacher everywhere
    new_teacher = _perturbed(old_teacher, 2)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    rebase_student(student, old_teacher, old_teacher)  # same teacher: nothing moves
    for k, v in student.state_dict().items():
        torch.testing.assert_close(v, before[k])
    rebase_student(student, old_teacher, new_teacher)
    old, new, after = old_teacher.state_dict(), new_teacher.state_dict(), student.state_dict()
    for k in new:
        torch.testing.assert_close(after[k] - new[k], before[k] - old[k], rtol=0, atol=1e-6)
    torch.testing.assert_close(after["time_embedding.cond_proj.weight"], before["time_embedding.cond_proj.weight"])
    # a zero-initialised student rebased onto the new teacher is the new teacher's fresh student
    fresh = rebase_student(student_from_teacher(old_teacher), old_teacher, new_teacher)
    for k, v in student_from_teacher(new_teacher).state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[k], v, rtol=0, atol=1e-6)


def test_rebase_student_rejects_a_different_architecture(tiny_family, student):
    with pytest.raises(ValueError, match="architectures"):
        rebase_student(student_from_teacher(tiny_family.unet), tiny_family.unet, student)


def test_train_mmg_rebase_needs_init_from(tmp_path, tiny_family_dir):
    from editor.train import mmg

    with pytest.raises(SystemExit):
        mmg.main(["--out", str(tmp_path / "run"), "--export", str(tiny_family_dir), "--steps", "1",
                  "--rebase-from", str(tiny_family_dir / "unet")])


def test_state_recorder_keeps_the_states_the_sampler_visits(tiny_family):
    """The recorder sees the initial noise first, then one state per step at the schedule's timesteps, and changes
    nothing in the result."""
    from editor.guidance import ThreePassGuidance
    from editor.sampling import make_scheduler, sample
    from editor.train.common import noise_scheduler
    from editor.train.trajectories import StateRecorder

    x, t, source, text, empty = _inputs()
    cond = Conditioning(source, text, empty.expand_as(text), Guidance(4.0, 1.5))
    rec = StateRecorder(ThreePassGuidance(tiny_family.unet))
    sched = make_scheduler(noise_scheduler().config)
    final = sample(rec, x, cond, sched, 3)
    assert len(rec.states) == 3 and rec.passes_per_step == 3
    torch.testing.assert_close(rec.states[0], x)
    sched.set_timesteps(3)
    assert [v.tolist() for v in rec.timesteps] == [[int(v)] * len(x) for v in sched.timesteps]
    second = sample(ThreePassGuidance(tiny_family.unet), x, cond, sched, 3)  # recording changes nothing
    torch.testing.assert_close(final, second)


def test_train_mmg_on_trajectory_states_records_and_reuses_the_bank(tmp_path, tiny_family_dir):
    from editor.train import mmg
    from editor.train.trajectories import TrajectoryBank

    fam = tmp_path / "fam"
    shutil.copytree(tiny_family_dir, fam)
    args = ["--export", str(fam), "--steps", "2", "--pool", "2", "--batch", "4", "--crop", "4", "--full-every", "2",
            "--trajectory-share", "1", "--trajectories", "3", "--trajectory-steps", "2",
            "--trajectory-text-range", "2", "3"]
    mmg.main(["--out", str(tmp_path / "run"), *args])
    bank = torch.load(tmp_path / "run" / "trajectories.pt")
    assert bank["settings"]["policy"] == "both" and len(bank["states"]) == 3 * 2
    assert bank["settings"]["text_range"] == [2.0, 3.0]  # --trajectory-text-range: the bank's own s_T range
    assert 2 <= bank["text_scales"].min() <= bank["text_scales"].max() <= 3
    assert bank["timesteps"].max() == 999  # the first state of every trajectory is pure noise at t = T - 1
    rows = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["on_trajectory"] for r in rows if "loss" in r] == [1.0, 1.0]  # share 1: every step on the bank
    # the same settings reuse the recorded bank; other settings are refused, not silently mixed
    shutil.copy(tmp_path / "run" / "trajectories.pt", tmp_path / "bank.pt")
    mmg.main(["--out", str(tmp_path / "run2"), "--trajectory-cache", str(tmp_path / "bank.pt"), *args])
    with pytest.raises(ValueError, match="recorded with"):
        TrajectoryBank.load(tmp_path / "bank.pt", {**bank["settings"], "n": 4})


def test_onpolicy_gap_is_zero_where_the_student_is_its_teacher(tiny_family, student):
    """At ``s_T = s_I = 1`` Eq. 1 is the conditional branch, which the zero-initialised student reproduces, so the
    gap is 0 on every kind of state and the two trajectories end in the same latents; at the default sliders it is
    not, and the first state of both trajectories is the initial noise."""
    from editor.train.common import noise_scheduler
    from editor.train.trajectories import STATE_KINDS, onpolicy_gap

    x, _, source, text, empty = _inputs()
    target = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    sched = make_scheduler(noise_scheduler().config)
    for scales, zero in (((1.0, 1.0), True), ((4.0, 1.5), False)):
        cond = Conditioning(source, text, empty.expand_as(text), Guidance(*scales))
        out = onpolicy_gap(tiny_family.unet, student, target, x, cond, sched, 3, progress=False)
        assert len(out["rows"]) == 3 and out["rows"][0]["t"] == 999
        gaps = [r[k] for r in out["rows"] for k in STATE_KINDS] + [out["final_gap"]]
        assert (max(gaps) < 1e-10) == zero, gaps
    # at t = 999 the student's and the teacher's trajectory start from the same state
    assert out["rows"][0]["teacher_traj"] == out["rows"][0]["student_traj"] > 0


def test_onpolicy_gap_command_writes_json(tmp_path, tiny_family_dir, tiny_family, student):
    from editor.train import trajectories

    fam = tmp_path / "fam"
    shutil.copytree(tiny_family_dir, fam)
    student.save_pretrained(fam / "student_mmg")
    out = tmp_path / "gap.json"
    trajectories.main(["--model", str(fam), "--json", str(out), "--steps", "2", "--frames", "2", "--pool", "2",
                       "--pool-cache", str(tmp_path / "pool.pt")])
    d = json.loads(out.read_text())
    assert len(d["rows"]) == 2 and set(d["mean"]) == {"forward", "teacher_traj", "student_traj"}
    assert d["settings"]["steps"] == 2 and (tmp_path / "pool.pt").exists()
    with pytest.raises(SystemExit):  # not a family folder: a usage error
        trajectories.main(["--model", str(tmp_path), "--json", str(out)])


def test_wording_mix_stays_between_a_family_s_wordings():
    """Without the mix the states are the bank's; with it each sample is a convex combination of two wordings of its
    own family (never of another family's), and a share of 1 mixes every sample."""
    from editor.train.mmg import wording_states

    # bank[f, p] is the constant 10 f + p, so a state names where it came from
    bank = (10 * torch.arange(3.0)[:, None] + torch.arange(4.0)[None, :])[:, :, None, None].expand(3, 4, 2, 5)
    fam, par = torch.tensor([0, 1, 2, 2, 1, 0] * 20), torch.tensor([0, 1, 2, 3, 0, 1] * 20)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(wording_states(bank, fam, par, 0.0, g), bank[fam, par])
    assert torch.equal(g.get_state(), torch.Generator().manual_seed(0).get_state())  # nothing drawn
    mixed = wording_states(bank, fam, par, 1.0, g)
    v = mixed[:, 0, 0]
    assert torch.all((v >= 10 * fam) & (v <= 10 * fam + 3))  # within the family's wordings
    assert torch.all(mixed == mixed[:, :1, :1])  # one mixing weight per sample
    assert (v != bank[fam, par][:, 0, 0]).float().mean() > 0.5
    with pytest.raises(SystemExit):
        from editor.train import mmg
        mmg.main(["--out", "unused", "--wording-mix", "1.5"])
