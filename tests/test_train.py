"""Two-step smoke tests of every training script (tiny pools, tiny batches): they run, log, save, and resume."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from diffusers import AutoencoderTiny, UNet2DConditionModel

from editor.loading import FAMILY_INDEX
from editor.train import autoencoder, common, data, deepen, teacher, widen


def _log(folder):
    return [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]


def test_autoencoder_two_steps_then_resume(tmp_path):
    args = ["--out", str(tmp_path / "run"), "--export", str(tmp_path / "ae"), "--pool", "2", "--batch", "2",
            "--crop", "64"]
    autoencoder.main(args + ["--steps", "2"])
    assert "block_out_channels" not in json.loads((tmp_path / "ae" / "config.json").read_text())  # no load warning
    ae = AutoencoderTiny.from_pretrained(tmp_path / "ae")
    assert ae.config.scaling_factor > 0
    autoencoder.main(args + ["--steps", "3"])  # resumes at step 2, runs one more
    steps = [r["step"] for r in _log(tmp_path / "run") if "loss" in r]
    assert steps[-1] == 2 and all(r["loss"] == r["loss"] for r in _log(tmp_path / "run") if "loss" in r)


def test_autoencoder_decoder_only_keeps_the_latent_space(tmp_path, tiny_family_dir):
    src = tiny_family_dir / "autoencoder"
    autoencoder.main(["--out", str(tmp_path / "run"), "--export", str(tmp_path / "ae"), "--pool", "2", "--batch", "2",
                      "--crop", "64", "--steps", "2", "--lr", "1e-2", "--dark-share", "0.5", "--decoder-only", str(src)])
    before, after = AutoencoderTiny.from_pretrained(src), AutoencoderTiny.from_pretrained(tmp_path / "ae")
    assert after.config.scaling_factor == before.config.scaling_factor
    enc_b, enc_a = before.encoder.state_dict(), after.encoder.state_dict()
    assert all(torch.equal(enc_b[k], enc_a[k]) for k in enc_b)
    dec_b, dec_a = before.decoder.state_dict(), after.decoder.state_dict()
    assert any(not torch.equal(dec_b[k], dec_a[k]) for k in dec_b)


def test_teacher_two_steps(tmp_path, tiny_family_dir):
    fam = tmp_path / "fam"
    shutil.copytree(tiny_family_dir / "autoencoder", fam / "autoencoder")
    teacher.main(["--out", str(tmp_path / "run"), "--export", str(fam), "--steps", "2", "--pool", "2",
                  "--batch", "4", "--crop", "4", "--full-every", "2"])
    unet = UNet2DConditionModel.from_pretrained(fam / "unet")
    assert unet.config.in_channels == 2 * unet.config.out_channels == 8
    assert (fam / FAMILY_INDEX).exists() and (fam / "scheduler" / "scheduler_config.json").exists()
    assert len([r for r in _log(tmp_path / "run") if "loss" in r]) == 2


def test_teacher_warm_start_from_shipped_weights(tmp_path, tiny_family_dir):
    fam = tmp_path / "fam"
    shutil.copytree(tiny_family_dir / "autoencoder", fam / "autoencoder")
    common = ["--export", str(fam), "--pool", "2", "--batch", "4", "--crop", "4", "--full-every", "2"]
    teacher.main(["--out", str(tmp_path / "a"), "--steps", "1"] + common)
    before = UNet2DConditionModel.from_pretrained(fam / "unet").conv_in.weight.clone()
    teacher.main(["--out", str(tmp_path / "b"), "--steps", "1", "--lr", "1e-9", "--init-from", str(fam / "unet")] + common)
    after = UNet2DConditionModel.from_pretrained(fam / "unet").conv_in.weight
    assert (after - before).abs().max() < 1e-5  # a tiny step from the saved weights, not a fresh init


def test_deepen_adds_a_layer_per_block_and_keeps_the_function(tmp_path, tiny_family_dir):
    unet = UNet2DConditionModel.from_pretrained(tiny_family_dir / "unet").eval()
    deepen.main(["--from", str(tiny_family_dir / "unet"), "--out", str(tmp_path / "deep")])
    deep = UNet2DConditionModel.from_pretrained(tmp_path / "deep").eval()
    assert deep.config.layers_per_block == unet.config.layers_per_block + 1
    assert all(len(b.resnets) == len(a.resnets) + 1 for a, b in zip(unet.down_blocks + unet.up_blocks,
                                                                    deep.down_blocks + deep.up_blocks))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, unet.config.in_channels, 8, 8, generator=g)
    t, text = torch.tensor([900, 10]), torch.randn(2, 3, unet.config.cross_attention_dim, generator=g)
    with torch.no_grad():
        before, after = unet(x, t, text).sample, deep(x, t, text).sample
        assert torch.allclose(before, after, atol=1e-5)
        for block in (deep.down_blocks[-1], deep.up_blocks[0]):  # the new layers are in the path: opening one of
            new = block.resnets[-1 if block in deep.down_blocks else 1]  # them changes the output
            new.conv2.weight.normal_(generator=g)
            assert not torch.allclose(deep(x, t, text).sample, after, atol=1e-3)
            new.conv2.weight.zero_()
    # and the teacher trains from it
    fam = tmp_path / "fam"
    shutil.copytree(tiny_family_dir / "autoencoder", fam / "autoencoder")
    teacher.main(["--out", str(tmp_path / "run"), "--export", str(fam), "--steps", "1", "--pool", "2", "--batch", "4",
                  "--crop", "4", "--full-every", "2", "--init-from", str(tmp_path / "deep")])
    assert UNet2DConditionModel.from_pretrained(fam / "unet").config.layers_per_block == 2


def test_null_text_anchor_targets_the_source_where_only_the_instruction_is_dropped():
    """The three dropout cases in their IP2P shares; with the anchor, exactly the text-only drops learn the source."""
    n, p = 4000, 0.1
    cond, x0 = torch.randn(n, 4, 2, 2) + 5.0, torch.randn(n, 4, 2, 2) - 5.0
    text, empty = torch.ones(n, 3, 2), torch.zeros(3, 2)
    plain = teacher.drop_conditions(cond, text, empty, x0, p, torch.Generator().manual_seed(1))
    c, t, y = teacher.drop_conditions(cond, text, empty, x0, p, torch.Generator().manual_seed(1), 1.0)
    assert torch.equal(c, plain[0]) and torch.equal(t, plain[1])  # the same draws
    no_text, no_img = (t == 0).flatten(1).all(1), (c == 0).flatten(1).all(1)
    anchored = (y == cond).flatten(1).all(1)
    assert torch.equal(anchored, no_text & ~no_img)
    assert torch.equal(y[~anchored], x0[~anchored])
    for share in ((no_text & ~no_img), (no_img & ~no_text), (no_text & no_img)):
        assert abs(share.float().mean().item() - p) < 0.02


def test_partial_anchor_anchors_that_share_of_the_text_only_drops():
    n, p = 8000, 0.2
    cond, x0 = torch.randn(n, 4, 2, 2) + 5.0, torch.randn(n, 4, 2, 2) - 5.0
    text, empty = torch.ones(n, 3, 2), torch.zeros(3, 2)
    c, t, y = teacher.drop_conditions(cond, text, empty, x0, p, torch.Generator().manual_seed(1), 0.5)
    text_only = (t == 0).flatten(1).all(1) & ~(c == 0).flatten(1).all(1)
    anchored = (y == cond).flatten(1).all(1)
    assert not (anchored & ~text_only).any()
    assert abs(anchored[text_only].float().mean().item() - 0.5) < 0.05
    assert torch.equal(y[~anchored], x0[~anchored])


def test_family_weights_skew_the_draws_and_default_to_uniform():
    fams = ("a", "b", "c")
    assert data.family_probs(fams, []) is None
    probs = data.family_probs(fams, ["b=3"])
    assert torch.allclose(probs, torch.tensor([0.2, 0.6, 0.2]))
    pool = data.LatentPool(torch.zeros(5, 1, 2, 2), torch.zeros(5, 3, 1, 2, 2), fams)
    g = torch.Generator().manual_seed(0)
    drawn = torch.cat([pool.sample(0, 100, 2, 4, 1, g, probs)[2] for _ in range(50)])
    assert abs((drawn == 1).float().mean().item() - 0.6) < 0.03


@pytest.mark.parametrize("args", [["--anchor-share", "0"], ["--anchor-share", "1.5"], ["--anchor-share", "0.5"],
                                  ["--family-weight", "nope=2"], ["--family-weight", "cartoon"],
                                  ["--family-weight", "cartoon=0"], ["--family-weight", "cartoon=x"]])
def test_teacher_rejects_bad_options(tmp_path, args):
    """An anchor share out of (0, 1] or without the anchor it scales, or a family weight that names no family or is
    not a positive number: a usage error before any data is built."""
    with pytest.raises(SystemExit) as e:
        teacher.main(["--out", str(tmp_path / "run"), "--export", str(tmp_path / "fam"), *args])
    assert e.value.code == 2


@pytest.mark.parametrize("script", ["teacher", "mmg", "clockwork"])
def test_trainers_name_a_folder_that_is_not_a_family(tmp_path, capsys, script):
    """``--export`` that is not a family folder (a typo, or a candidate folder not yet copied): a usage error that
    says what is missing and how to make one, not diffusers' hub-lookup traceback."""
    import importlib
    main = importlib.import_module(f"editor.train.{script}").main
    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path / "run"), "--export", str(tmp_path / "nowhere"), "--steps", "1"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "autoencoder/" in err and "cp -r data/models/embedded" in err


def test_teacher_null_text_anchor_trains(tmp_path, tiny_family_dir):
    fam = tmp_path / "fam"
    shutil.copytree(tiny_family_dir / "autoencoder", fam / "autoencoder")
    teacher.main(["--out", str(tmp_path / "run"), "--export", str(fam), "--steps", "2", "--pool", "2", "--batch", "4",
                  "--crop", "4", "--full-every", "2", "--null-text-target", "source", "--drop", "0.3",
                  "--family-weight", "cartoon=3", "--templated-instructions"])
    args = json.loads((fam / "unet" / "training.json").read_text())["args"]
    assert args["null_text_target"] == "source" and args["family_weight"] == ["cartoon=3"]
    assert args["templated_instructions"] is True


def test_templated_wordings_keep_the_held_out_paraphrases_unseen():
    """Every family gets the same number of training wordings, its seen paraphrases first; each term is found in its
    seen paraphrases, and no held-out paraphrase is among them. The bank's [family, wording] is that wording."""
    from editor.world import edits
    n = edits.N_SEEN + len(edits.TRAINING_TEMPLATES) * 2
    for f in edits.FAMILIES.values():
        words = edits.training_instructions(f, templated=True)
        assert words[:edits.N_SEEN] == f.instructions("seen") == edits.training_instructions(f)
        assert len(words) == len(set(words)) == n
        assert not set(words) & set(f.instructions("held-out"))
        assert all(term in " ".join(f.instructions("seen")) for term in edits.TRAINING_TERMS[f.id])
    prompts = []

    def encoder(texts):  # states that name the prompt they encode
        prompts.extend(texts)
        return torch.arange(len(prompts) - len(texts), len(prompts)).float()[:, None, None].expand(-1, 3, 2)

    bank, empty = common.instruction_bank(encoder, templated=True)
    assert bank.shape == (len(edits.FAMILIES), n, 3, 2) and prompts[-1] == ""
    cartoon = list(edits.FAMILIES).index("cartoon")
    assert prompts[int(bank[cartoon, 5, 0, 0])] == edits.training_instructions(edits.FAMILIES["cartoon"], True)[5]


def test_weight_floor_lifts_the_noisiest_steps_only():
    """min-SNR-5 weights for v-prediction fall to ~0.005 at t = 999; a floor of 1 makes every weight 1 (the loss is
    the plain MSE), a floor of 0 leaves them, and the loss is the weighted MSE either way."""
    sched = common.noise_scheduler()
    snr = sched.alphas_cumprod / (1 - sched.alphas_cumprod)
    w = teacher.loss_weights(snr)
    assert w[999] < 0.01 and w.max() <= 5 / 6 + 1e-6

    class Echo(torch.nn.Module):  # predicts zeros: the loss is then the weighted mean of v^2
        device = torch.device("cpu")

        def forward(self, x, t, text):
            return SimpleNamespace(sample=torch.zeros_like(x[:, :4]))

    x0, cond, text = torch.randn(8, 4, 4, 4), torch.randn(8, 4, 4, 4), torch.randn(8, 3, 5)
    losses = {f: teacher.diffusion_loss(Echo(), sched, x0, cond, text, torch.Generator().manual_seed(0), f)
              for f in (0.0, 0.5, 1.0)}
    assert torch.allclose(losses[1.0]["loss"], losses[1.0]["mse"])
    assert losses[0.0]["loss"] < losses[0.5]["loss"] < losses[1.0]["loss"]
    assert torch.equal(losses[0.0]["mse"], losses[1.0]["mse"])  # same draws of t and noise


@pytest.fixture
def grey_photos(monkeypatch):
    """Training frames from one flat grey photo (and procedural scenes), so the pools build in a blink."""
    from editor.world import scenes

    monkeypatch.setattr(scenes, "real_photos", lambda split: [np.full((96, 128, 3), 150, np.uint8)])


def test_dark_share_darkens_only_its_share_and_keeps_the_rest(grey_photos):
    from editor.world import scenes

    plain = scenes.training_frames(12, seed=3, size=32)
    dark = scenes.training_frames(12, seed=3, size=32, dark_share=0.5)
    darkened = [not np.array_equal(p, d) for p, d in zip(plain, dark)]
    assert 0 < sum(darkened) < 12  # some frames, not all
    assert all(d.mean() < p.mean() for p, d, k in zip(plain, dark, darkened) if k)
    assert all(np.array_equal(p, d) for p, d, k in zip(plain, dark, darkened) if not k)  # same crops otherwise
    grey = np.full((1, 1, 3), 128, np.uint8)
    assert scenes.darken(grey, 1.0)[0, 0, 0] == 128 and scenes.darken(grey, 0.002)[0, 0, 0] < 12


def test_pool_cache_refuses_another_dark_share(tmp_path, tiny_family_dir, grey_photos):
    ae = AutoencoderTiny.from_pretrained(tiny_family_dir / "autoencoder")
    cache = tmp_path / "pool.pt"
    pool = data.build_pool(ae, 2, 0, cache=cache, dark_share=0.5)
    assert torch.equal(data.build_pool(ae, 2, 0, cache=cache, dark_share=0.5).sources, pool.sources)
    with pytest.raises(ValueError, match="dark_share=0.5"):
        data.build_pool(ae, 2, 0, cache=cache)


def test_partial_edits_mix_full_and_partial_strengths():
    from editor.train.data import partial_edits

    g = torch.Generator().manual_seed(0)
    src, tgt = torch.zeros(64, 2, 3, 3), torch.ones(64, 2, 3, 3)
    assert partial_edits(src, tgt, 0.0, (0.3, 1.0), g) is tgt  # off: the old recipe, no RNG drawn
    assert torch.allclose(partial_edits(src, tgt, 1.0, (0.5, 0.5), g), torch.full_like(tgt, 0.5))
    a = partial_edits(src, tgt, 0.5, (0.2, 0.6), g)[:, 0, 0, 0]  # per-sample strength, constant within a sample
    partial = a < 1
    assert 10 < int(partial.sum()) < 54 and bool(((a[partial] >= 0.2) & (a[partial] <= 0.6)).all())
    assert torch.equal(a[~partial], torch.ones(int((~partial).sum())))


def test_widen_copies_the_first_block_exactly_and_breaks_the_symmetry(tmp_path, tiny_family_dir):
    unet = UNet2DConditionModel.from_pretrained(tiny_family_dir / "unet").eval()
    widen.main(["--from", str(tiny_family_dir / "unet"), "--out", str(tmp_path / "wide"), "--factor", "3"])
    wide = UNet2DConditionModel.from_pretrained(tmp_path / "wide").eval()
    c = unet.config.block_out_channels[0]
    assert wide.config.block_out_channels[0] == 3 * c
    assert list(wide.config.block_out_channels[1:]) == list(unet.config.block_out_channels[1:])
    feats = {}
    for name, m in (("old", unet), ("new", wide)):
        m.down_blocks[0].register_forward_hook(lambda mod, inp, out, name=name: feats.__setitem__(name, out[0]))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, unet.config.in_channels, 8, 8, generator=g)
    t, text = torch.tensor([900, 10]), torch.randn(2, 3, unet.config.cross_attention_dim, generator=g)
    with torch.no_grad():
        out = wide(x, t, text).sample
        unet(x, t, text)
    assert out.shape == x[:, : unet.config.out_channels].shape and torch.isfinite(out).all()
    # the first block's features are two copies of the old ones: its convs read the split weights, its norms the copies
    old, new = feats["old"], feats["new"].unflatten(1, (c, 3))
    assert all(torch.allclose(new[:, :, j], old, atol=1e-5) for j in range(3))
    # the zero-sum split differs between the copies, so training can pull them apart
    w = wide.down_blocks[0].resnets[0].conv1.weight.unflatten(1, (c, 3))
    assert not torch.allclose(w[:, :, 0], w[:, :, 1])
    assert torch.allclose(w.sum(2), unet.down_blocks[0].resnets[0].conv1.weight.index_select(
        0, widen.channel_map(c, 3 * c, c, 3)), atol=1e-6)
    with pytest.raises(ValueError, match="not \\[native"):
        widen.channel_map(50, 100, 48, 2)
    with pytest.raises(ValueError, match="shortcut"):  # 2 x 16 = the second block's 32
        widen.widen(unet, factor=2)


def test_sentence_only_teacher_records_its_encoding_for_the_loader(tmp_path, tiny_family_dir, moving_frames):
    """``--text-tokens 0``: the bank holds the sentence embedding alone (the full encoder's first slot), family.json
    records it, and the loaded family encodes instructions the same way, so an edit runs end to end."""
    from editor.guidance import Guidance
    from editor.loading import load_family
    from editor.pipeline import EditRequest, Editor
    from editor.text_encoder import MiniLMEncoder
    full, only = MiniLMEncoder()(["make it snow"]), MiniLMEncoder(keep_tokens=0)(["make it snow"])
    assert only.shape == (1, 1, 384) and torch.equal(only, full[:, :1])
    with pytest.raises(ValueError):
        MiniLMEncoder(keep_tokens=17)
    fam = tmp_path / "fam"
    shutil.copytree(tiny_family_dir, fam)
    teacher.main(["--out", str(tmp_path / "run"), "--export", str(fam), "--steps", "1", "--pool", "2", "--batch", "4",
                  "--crop", "4", "--full-every", "2", "--text-tokens", "0", "--init-from", str(fam / "unet")])
    assert json.loads((fam / FAMILY_INDEX).read_text())["text_tokens"] == 0
    family = load_family(fam)
    assert family.text_encoder(["make it snow"]).shape[-2] == 1
    out = Editor(family).edit_frames(moving_frames[:2], EditRequest("make it snow", Guidance(4.0, 1.5), steps=2))
    assert out.frames.shape == moving_frames[:2].shape


# function words the held-out guard below ignores
_FUNCTION_WORDS = {"a", "an", "the", "it", "to", "of", "in", "into", "like", "look", "make", "and", "its", "their",
                   "from", "is", "up", "down", "through", "give", "turn", "add", "view", "change", "all", "this",
                   "that", "with", "as", "be"}


def test_hand_written_wordings_keep_the_held_out_wordings_unseen():
    """``data/instructions/training_wordings.json`` (``--extra-wordings``) was written after the held-out paraphrases
    were known, so two mechanical guards: no wording uses a word of a held-out paraphrase that no seen paraphrase uses
    (function words aside), and none is within MiniLM sentence cosine 0.8 of a held-out paraphrase."""
    import re

    from editor.text_encoder import MiniLMEncoder
    from editor.world import edits
    wordings = common.load_wordings(Path("data/instructions/training_wordings.json"))
    words = lambda s: set(re.findall(r"[a-z0-9\-]+", s.lower()))
    seen = set().union(*(words(p) for f in edits.FAMILIES.values() for p in f.instructions("seen")))
    held = [p for f in edits.FAMILIES.values() for p in f.instructions("held-out")]
    held_only = set().union(*map(words, held)) - seen - _FUNCTION_WORDS
    assert {"desaturate", "1900s", "night-vision", "blocky"} <= held_only
    for fam, ws in wordings.items():
        assert len(ws) == len(set(ws)) == 16 and not set(ws) & set(edits.FAMILIES[fam].paraphrases)
        assert all(not words(w) & held_only for w in ws), fam
    enc = MiniLMEncoder(keep_tokens=0)
    unit = lambda texts: torch.nn.functional.normalize(enc(list(texts))[:, 0], dim=-1)
    extra = unit(w for ws in wordings.values() for w in ws)
    assert float((extra @ unit(held).T).max()) < 0.8
    bank, _ = common.instruction_bank(enc, extra=wordings)
    assert bank.shape[:2] == (len(edits.FAMILIES), edits.N_SEEN + 16)
    with pytest.raises(ValueError):
        common.instruction_bank(enc, extra={"sepia": ("one more",)})  # uneven counts


def test_load_wordings_names_missing_and_unknown_families(tmp_path):
    f = tmp_path / "w.json"
    f.write_text(json.dumps({"_note": "x", "sepia": ["a"], "nonsense": ["b"]}))
    with pytest.raises(ValueError, match="missing.*unknown.*nonsense"):
        common.load_wordings(f)
    assert common.load_wordings(None) is None


def test_zero_snr_teacher_writes_its_schedule_for_the_loader_and_later_trainers(tmp_path, tiny_family_dir,
                                                                                 moving_frames, monkeypatch):
    import editor.pipeline
    from editor.guidance import Guidance
    from editor.loading import load_family
    from editor.pipeline import Editor, EditRequest

    fam = tmp_path / "fam"
    shutil.copytree(tiny_family_dir / "autoencoder", fam / "autoencoder")
    teacher.main(["--out", str(tmp_path / "run"), "--export", str(fam), "--steps", "1", "--pool", "2", "--batch", "4",
                  "--crop", "4", "--full-every", "2", "--zero-snr"])
    assert float(common.family_noise_scheduler(tiny_family_dir).alphas_cumprod[-1]) > 1e-3  # the default's leak
    trained = common.family_noise_scheduler(fam)  # what the student's and the adaptors' trainers now share
    assert trained.config.rescale_betas_zero_snr and float(trained.alphas_cumprod[-1]) == 0.0
    assert float(common.family_noise_scheduler(tmp_path / "no_family").alphas_cumprod[-1]) > 1e-3
    family = load_family(fam)
    assert float(family.scheduler.alphas_cumprod[-1]) == 0.0  # the sampler starts where training ended
    latents = []
    plain = editor.pipeline.sample
    monkeypatch.setattr(editor.pipeline, "sample", lambda *a, **k: latents.append(plain(*a, **k)) or latents[-1])
    Editor(family).edit_frames(moving_frames[:2], EditRequest("make it sepia", Guidance(4.0, 1.5), steps=2))
    assert latents and torch.isfinite(latents[0]).all()  # v-prediction at SNR 0 (x0 = -v) samples without NaNs
