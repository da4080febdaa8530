"""Mechanism tests with known answers, on tiny random models (nothing downloaded)."""
from __future__ import annotations

import json
import string

import numpy as np
import pytest
import torch

from editor.cross_frame_attention import CrossFrameAttnProcessor, FrameLayout, with_anchor
from editor.eval import metrics
from editor.guidance import Conditioning, Guidance, ThreePassGuidance, combine
from editor.pipeline import Editor, EditRequest
from editor.sampling import initial_noise, sample
from editor.world import edits


# --- procedural edits ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fid", list(edits.FAMILIES))
def test_every_family_is_deterministic_and_changes_the_frame(fid, moving_frames):
    fam = edits.FAMILIES[fid]
    a, b = fam.apply(moving_frames, seed=3), fam.apply(moving_frames, seed=3)
    assert a.shape == moving_frames.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert metrics.psnr(a, moving_frames) < 35
    assert len(fam.instructions("seen")) == edits.N_SEEN and len(fam.instructions("held-out")) >= 2


def test_families_are_mutually_distinguishable(moving_frames):
    targets = {k: f.apply(moving_frames, 0) for k, f in edits.FAMILIES.items()}
    for k in targets:
        assert metrics.instruction_hit(targets[k], k, targets)
        assert metrics.hit_margin(targets[k], k, targets) > 0  # the target itself: 100 dB minus the runner-up
    assert len(edits.FAMILIES) >= 12
    # halfway between sepia and warm: the margin changes sign between the two requests and is the same size
    mid = ((targets["sepia"].astype(np.float64) + targets["warm"]) / 2).round().astype(np.uint8)
    near_sepia = ((3 * targets["sepia"].astype(np.float64) + targets["warm"]) / 4).round().astype(np.uint8)
    assert abs(metrics.hit_margin(mid, "sepia", targets) + metrics.hit_margin(mid, "warm", targets)) < 0.05
    assert metrics.hit_margin(near_sepia, "sepia", targets) > 0 > metrics.hit_margin(near_sepia, "warm", targets)
    assert metrics.instruction_hit(near_sepia, "sepia", targets)


def test_snow_depends_on_seed_but_is_steady_within_a_clip(moving_frames):
    still = np.repeat(moving_frames[:1], 3, axis=0)
    snow = edits.FAMILIES["snow"]
    a = snow.apply(still, seed=1)
    assert not np.array_equal(a, snow.apply(still, seed=2))
    np.testing.assert_array_equal(a[0], a[2])


def test_downsample_psnr_separates_flat_from_detailed_frames():
    flat = np.full((2, 32, 48, 3), 90, np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (2, 32, 48, 3), dtype=np.uint8)
    assert metrics.downsample_psnr(flat, 4) == 100.0  # nothing to lose
    assert metrics.downsample_psnr(noise, 4) < 15 < metrics.downsample_psnr(noise, 1)


def test_family_lookup():
    assert edits.family_of("Make it Night.") == "night"
    assert edits.family_of("something else") is None
    with pytest.raises(KeyError, match="known"):
        edits.get_family("nope")


# --- guidance ---------------------------------------------------------------------------------------------------------

def test_combine_with_unit_scales_is_the_conditional_prediction():
    u, i, f = torch.randn(3, 2, 4, 8, 8)
    torch.testing.assert_close(combine(u, i, f, Guidance(text=1.0, image=1.0)), f)


def test_combine_does_not_switch_off_below_one():
    u, i, f = torch.zeros(1), torch.ones(1), 3 * torch.ones(1)
    assert float(combine(u, i, f, Guidance(text=2.0, image=0.5))) == pytest.approx(0.5 + 2 * 2)


def _cond(fam, n=2, anchor=None, guidance=Guidance(1.0, 1.0), seed=0):
    g = torch.Generator().manual_seed(seed)
    c = fam.unet.config
    src = torch.randn(n, c.out_channels, 8, 8, generator=g)
    text = fam.text_encoder(["make it night", ""])
    return Conditioning(source=src, text=text[:1].expand(n, -1, -1), empty=text[1:].expand(n, -1, -1),
                        guidance=guidance, anchor=anchor)


def test_three_pass_guidance_with_unit_scales_equals_conditional_unet(tiny_family):
    c = _cond(tiny_family)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([500, 500])
    guided = ThreePassGuidance(tiny_family.unet)(x, t, c)
    direct = tiny_family.unet(torch.cat([x, c.source], 1), t, c.text).sample
    torch.testing.assert_close(guided, direct, atol=1e-5, rtol=1e-4)


# --- cross-frame attention --------------------------------------------------------------------------------------------

def test_cross_frame_attention_on_a_single_frame_equals_plain_attention(tiny_family):
    from diffusers.models.attention_processor import AttnProcessor2_0

    attn = next(m for n, m in tiny_family.unet.named_modules() if n.endswith("attn1"))
    h = torch.randn(3, 16, attn.to_q.in_features)
    plain = AttnProcessor2_0()(attn, h)
    cross = CrossFrameAttnProcessor()(attn, h, frame_layout=FrameLayout(groups=3, frames=1, anchor=0))
    torch.testing.assert_close(cross, plain, atol=1e-5, rtol=1e-4)


def test_with_anchor_appends_the_anchor_tokens():
    x = torch.arange(2 * 3 * 2, dtype=torch.float32).view(6, 2, 1)  # 2 groups x 3 frames, 2 tokens
    y = with_anchor(x, FrameLayout(2, 3, anchor=1))
    assert y.shape == (6, 4, 1)
    torch.testing.assert_close(y[0, 2:], x[1])
    torch.testing.assert_close(y[5, 2:], x[4])
    with pytest.raises(ValueError):
        with_anchor(x, FrameLayout(1, 3, 0))


# --- sampling and the engine ------------------------------------------------------------------------------------------

def test_initial_noise_is_shared_by_every_frame():
    n = initial_noise((4, 8, 8), seed=5, frames=3)
    torch.testing.assert_close(n[0], n[2])
    assert not torch.equal(n[0], initial_noise((4, 8, 8), seed=6, frames=1)[0])


def test_sampler_runs_the_requested_steps_and_is_reproducible(tiny_family):
    model = ThreePassGuidance(tiny_family.unet)
    c = _cond(tiny_family, anchor=1, guidance=Guidance(5.0, 1.5))
    seen = []
    x = initial_noise((4, 8, 8), 0, 2)
    a = sample(model, x, c, tiny_family.scheduler, 3, seen.append)
    b = sample(model, x, c, tiny_family.scheduler, 3)
    assert [s.step for s in seen] == [0, 1, 2]
    torch.testing.assert_close(a, b)


def test_edit_frames_chunks_match_one_batch(tiny_family, moving_frames):
    editor = Editor(tiny_family)
    req = EditRequest("make it night", Guidance(5.0, 1.5), steps=2, seed=1, chunk=16)
    whole = editor.edit_frames(moving_frames, req)
    chunked = editor.edit_frames(moving_frames, EditRequest(**{**req.__dict__, "chunk": 3}))
    assert whole.frames.shape == moving_frames.shape and whole.unet_passes == 6
    assert metrics.psnr(whole.frames, chunked.frames) > 45  # same anchor in every chunk: same result


def test_progress_reaches_total(tiny_family, moving_frames):
    calls = []
    Editor(tiny_family).edit_frames(moving_frames, EditRequest("invert the colors", steps=2, chunk=4),
                                    progress=lambda d, t: calls.append((d, t)))
    assert calls[-1][0] == calls[-1][1] == 4


def test_one_default_clock_and_one_request_builder(tiny_family):
    from editor.clockwork import DEFAULT_CLOCK, ClockworkConfig
    from editor.eval.evaluate import parse_args
    from editor.study.studies import StudyParams

    assert ClockworkConfig().clock == EditRequest("x").clock == StudyParams().clock == DEFAULT_CLOCK
    assert parse_args(["--clips", "c"]).clock == DEFAULT_CLOCK
    req = EditRequest.from_settings("  make it night ", "mmg", family=tiny_family, seed=3.0, clock=4.0)
    assert (req.instruction, req.steps, req.seed, req.clock, req.variant) == ("make it night", 2, 3, 4, "mmg")
    assert req.guidance == tiny_family.default_guidance and isinstance(req.seed, int)
    assert EditRequest.from_settings("x", s_t=5, steps=8) == EditRequest("x", Guidance(5.0, 1.5), steps=8)
    assert StudyParams(steps=4, s_T=5.0, seed=2).request("x", "mmg") == EditRequest.from_settings(
        "x", "mmg", s_t=5.0, s_i=1.5, steps=4, seed=2)
    for kw, message in [({"steps": 0}, "steps must be"), ({"steps": 2.5}, "steps must be"),
                        ({"clock": 9}, "clock must be a whole number from 1 to 8"), ({"seed": -1}, "seed must be"),
                        ({"seed": float("nan")}, "seed must be"), ({"s_t": -3}, "guidance scales")]:
        with pytest.raises(ValueError, match=message):
            EditRequest.from_settings("x", **kw)


def test_bad_requests_are_rejected():
    with pytest.raises(ValueError, match="empty"):
        EditRequest("  ")
    with pytest.raises(ValueError):
        EditRequest("x", steps=0)
    with pytest.raises(ValueError, match="clock"):
        EditRequest("x", clock=0)
    with pytest.raises(KeyError, match="known"):
        from editor.variants import get_variant
        get_variant("nope")


# --- real-checkpoint loader on tiny random InstructPix2Pix components -------------------------------------------------

def _save_tiny_ip2p(folder):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    UNet2DConditionModel(sample_size=8, in_channels=8, out_channels=4, block_out_channels=(16, 32),
                         down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
                         cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8).save_pretrained(folder / "unet")
    AutoencoderKL(block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8,
                  scaling_factor=0.18215).save_pretrained(folder / "vae")
    CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
                                 vocab_size=100, max_position_embeddings=77)).save_pretrained(folder / "text_encoder")
    tok_dir = folder / "tokenizer_src"
    tok_dir.mkdir()
    chars = string.ascii_lowercase + string.digits + ".,!?-'"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in chars:
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77).save_pretrained(
        folder / "tokenizer")
    DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionInstructPix2PixPipeline"}))
    return folder


def test_hub_loader_on_tiny_instruct_pix2pix(tmp_path, moving_frames):
    from editor.loading import load_family

    fam = load_family(_save_tiny_ip2p(tmp_path / "ip2p"))
    assert fam.condition_scale == pytest.approx(1 / 0.18215) and fam.latent_scale == pytest.approx(0.18215)
    out = Editor(fam).edit_frames(moving_frames[:2, :32, :32], EditRequest("make it night", steps=2))
    assert out.frames.shape == (2, 32, 32, 3)


def test_hub_loader_with_a_tiny_autoencoder_keeps_the_pipeline_condition_scale(tmp_path, moving_frames):
    from diffusers import AutoencoderTiny

    from editor.loading import load_family

    folder = _save_tiny_ip2p(tmp_path / "ip2p")
    AutoencoderTiny(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8), num_encoder_blocks=(1, 1),
                    num_decoder_blocks=(1, 1), latent_channels=4).save_pretrained(tmp_path / "taesd")
    fam = load_family(folder, autoencoder=tmp_path / "taesd")
    # TAESD latents are already scaled: noisy latents = raw, the UNet's condition = raw / 0.18215
    assert fam.latent_scale == 1.0 and fam.condition_scale == pytest.approx(1 / 0.18215)
    out = Editor(fam).edit_frames(moving_frames[:2, :32, :32], EditRequest("make it night", steps=1))
    assert out.frames.shape == (2, 32, 32, 3)


def test_missing_model_folder_is_a_clear_error(tmp_path):
    from editor.loading import load_family

    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_family(tmp_path / "nowhere")


def test_every_available_variant_edits_and_reports_its_passes(tiny_family, moving_frames):
    from editor.variants import available_variants, get_variant

    names = available_variants(tiny_family)
    assert "teacher" in names and "teacher+clockwork-identity" in names and "mmg" not in names
    for name in names:
        req = EditRequest("make it night", steps=4, clock=2, variant=name)
        out = Editor(tiny_family).edit_frames(moving_frames[:3], req)
        assert out.frames.shape == moving_frames[:3].shape
        assert out.unet_passes == get_variant(name).unet_passes(req)
    assert get_variant("teacher+clockwork-identity").unet_passes(EditRequest("x", steps=8, clock=2)) == 12


def test_accuracy_interval_and_paired_hits():
    """Wilson interval of a hit count and the exact McNemar test on paired hits (scipy's binomtest)."""
    lo, hi = metrics.accuracy_interval(42, 52)
    assert 0.68 < lo < 42 / 52 < hi < 0.90  # one task of 52 is 1.9 points: well inside
    assert metrics.accuracy_interval(0, 4)[0] == 0.0 and metrics.accuracy_interval(4, 4)[1] == pytest.approx(1.0)
    assert metrics.paired_hits([True] * 6, [False] * 6) == {"gained": 0, "lost": 6, "p_value": 0.03125}
    assert metrics.paired_hits([True, False, True], [False, True, True]) == {"gained": 1, "lost": 1, "p_value": 1.0}
    assert metrics.paired_hits([True], [True]) == {"gained": 0, "lost": 0, "p_value": 1.0}
    with pytest.raises(ValueError):  # not the same tasks
        metrics.paired_hits([True], [True, False])
