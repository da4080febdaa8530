"""The app's handlers as plain functions (no Gradio server): gate, costs, variants, the first visit, compare, rate,
study, results."""
from __future__ import annotations

import json
import shutil
import threading
import time

import numpy as np
import pytest

from editor.eval.metrics import psnr
from editor.pipeline import EditRequest
from editor.study.store import file_sha256
from editor.video_io import read_clip, write_clip
from editor.world.edits import FAMILIES
from ui import compare, rate, results, study
from ui.common import (KnownEdits, ProgressReport, UserError, base_variant, default_variant, frames_to_edit,
                       uses_clockwork, with_clockwork)
from ui.costs import CostTable, cost_frame, load_speeds, one_step
from ui.edit import on_costs, on_variant, preview_frame, run_edit
from ui.serving import EditGate
from ui.widgets import App, AppConfig

SIDE = 64
TOKEN = "test-admin-token"


@pytest.fixture(scope="module")
def costs(tiny_family):
    return CostTable(tiny_family, (8, 8))


@pytest.fixture
def config(tmp_path):
    return AppConfig(short_side=SIDE, max_frames=4, samples=(), output_dir=str(tmp_path / "out"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory, moving_frames):
    return write_clip(moving_frames[:4], 8, tmp_path_factory.mktemp("clips") / "moving.mp4")


@pytest.fixture(scope="module")
def onestep_family(tmp_path_factory, tiny_family_dir):
    """The tiny family with an MMG student and a one-step student (both the teacher's student_from_teacher)."""
    from diffusers import UNet2DConditionModel

    from editor.loading import load_family
    from editor.mmg import student_from_teacher

    fam = tmp_path_factory.mktemp("onestep_family")
    shutil.copytree(tiny_family_dir, fam, dirs_exist_ok=True)
    student = student_from_teacher(UNet2DConditionModel.from_pretrained(fam / "unet"))
    for name in ("student_mmg", "student_onestep"):
        student.save_pretrained(fam / name)
    return load_family(fam)


@pytest.fixture
def admin(monkeypatch):
    monkeypatch.setenv("MOVIE_ADMIN_TOKEN", TOKEN)
    return TOKEN


# ----------------------------------------------------------------------------- gate and progress

def test_gate_runs_one_edit_and_refuses_beyond_the_wait_list():
    gate = EditGate(max_waiting=1)
    holding, release, waiter_in = threading.Event(), threading.Event(), threading.Event()

    def hold():
        with gate.slot():
            holding.set()
            release.wait(5)

    def wait():
        waiter_in.set()
        with gate.slot():
            pass

    threads = [threading.Thread(target=hold)]
    threads[0].start()
    assert holding.wait(5)
    threads.append(threading.Thread(target=wait))
    threads[1].start()
    assert waiter_in.wait(5)
    deadline = time.monotonic() + 5
    while gate.waiting < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(UserError, match="busy: 1 edits are already waiting"):
        with gate.slot():
            pass
    release.set()
    for t in threads:
        t.join(5)
    assert gate.waiting == 0
    with gate.slot():  # free again
        pass


def test_progress_report_counts_frames_and_time_left():
    now = [100.0]
    seen = []
    report = ProgressReport(8, lambda *a: seen.append(a), clock=lambda: now[0])
    now[0] = 110.0
    report(1, 4)  # a quarter done in 10 s -> 30 s left
    assert seen[-1][:2] == (2, 8) and "2/8 frames" in seen[-1][2] and "about 30 s left" in seen[-1][2]
    report(4, 4)
    assert seen[-1][:2] == (8, 8) and "about 0 s left" in seen[-1][2]
    ProgressReport(8, None)(1, 2)  # no sink: nothing happens


# ----------------------------------------------------------------------------- variants and costs

def test_clockwork_switch_maps_onto_the_registered_variants():
    names = ["teacher", "teacher+clockwork-identity", "mmg", "mmg+clockwork-identity", "mmg+clockwork"]
    assert with_clockwork("teacher", True, names) == "teacher+clockwork-identity"
    assert with_clockwork("mmg", True, names) == "mmg+clockwork"  # the trained adaptor first
    assert with_clockwork("mmg+clockwork-identity", True, names) == "mmg+clockwork-identity"
    assert with_clockwork("mmg+clockwork", False, names) == "mmg"
    assert with_clockwork("teacher", True, ["teacher"]) == "teacher"
    assert base_variant("teacher+clockwork-identity") == "teacher"
    assert uses_clockwork("mmg+clockwork") and not uses_clockwork("mmg") and not uses_clockwork("nope")


def test_costs_follow_the_schedule(costs):
    from editor.variants import VARIANTS

    teacher = costs.cost("teacher", 4)
    clockwork = costs.cost("teacher+clockwork-identity", 4, clock=2)
    assert teacher.unet_passes == 12 and clockwork.unet_passes == 6
    full, cheap = clockwork.step_gflops[0], clockwork.step_gflops[1]
    assert clockwork.step_gflops == (full, cheap, full, cheap) and 0 < cheap < full
    assert teacher.step_gflops == (full,) * 4
    assert teacher.gflops == pytest.approx(4 * full) and clockwork.gflops == pytest.approx(2 * (full + cheap))
    assert costs.cost("teacher+clockwork-identity", 4, clock=1).gflops == pytest.approx(teacher.gflops)
    assert "12 UNet passes" in costs.label("teacher", 4)
    assert one_step(VARIANTS["onestep"]) and not any(one_step(VARIANTS[n]) for n in VARIANTS if n != "onestep")


def test_a_few_step_student_costs_its_own_steps(onestep_family):
    costs = CostTable(onestep_family, (8, 8))
    assert costs.cost("onestep", 20).unet_passes == 1 and len(costs.cost("onestep", 20).step_gflops) == 1
    assert costs.cost("onestep", 4).unet_passes == 4 and costs.cost("onestep", 3).unet_passes == 1
    assert costs.cost("mmg", 4).gflops == pytest.approx(4 * costs.cost("onestep", 1).gflops)


def test_the_cost_table_shows_measured_speed_when_the_bench_wrote_it(costs, tmp_path):
    sizes = {64: (96, 64), 128: (192, 128)}
    flops_only = cost_frame(costs, ["teacher", "teacher+clockwork-identity"], 4, 2, sizes, [])
    assert list(flops_only.columns) == ["variant", "size (px)", "UNet passes", "GFLOPs / frame"]
    assert list(flops_only["size (px)"]) == ["96x64", "192x128"] * 2
    assert flops_only["GFLOPs / frame"][1] == pytest.approx(4 * flops_only["GFLOPs / frame"][0], rel=0.05)
    bench = tmp_path / "bench_speed.json"
    bench.write_text(json.dumps({"rows": [
        {"variant": "teacher", "short_side": 64, "steps": 20, "ms_per_frame": 500.0, "fps": 2.0},
        {"variant": "teacher", "short_side": 64, "steps": 4, "ms_per_frame": 100.0, "fps": 10.0},
        {"variant": "teacher+clockwork-identity", "short_side": 128, "steps": 20, "ms_per_frame": 300.0,
         "fps": 3.33}], "settings": {}}))
    table = cost_frame(costs, ["teacher", "teacher+clockwork-identity"], 4, 2, sizes, load_speeds(bench))
    rows = {(r.variant, r._2): r for r in table.itertuples()}
    assert (rows["teacher", "96x64"][5], rows["teacher", "96x64"][7]) == (100.0, 4)  # the same steps first
    assert rows["teacher+clockwork-identity", "192x128"][7] == 20  # else what was measured, with its steps
    assert table["measured ms / frame"].isna().sum() == 2
    assert load_speeds(tmp_path / "missing.json") == [] and load_speeds(None) == []


# ----------------------------------------------------------------------------- edit and preview

def test_run_edit_with_the_clockwork_switch(editor, config, clip, costs):
    out, info = run_edit(editor, config, clip, "make it sepia", "teacher", 7.5, 1.5, 4, 5, False, clockwork=True,
                         clock=2, costs=costs)
    assert info["settings"]["variant"] == "teacher+clockwork-identity" and info["settings"]["clock"] == 2
    assert info["speed"]["unet_passes_per_frame"] == 6
    assert info["speed"]["unet_gflops_per_frame"] == pytest.approx(costs.cost(
        "teacher+clockwork-identity", 4, 2, (SIDE // 8, SIDE // 8)).gflops, rel=1e-2)
    assert len(read_clip(out).frames) == 4
    for bad in (0, 9, 2.5):
        with pytest.raises(UserError, match="clock must be a whole number from 1 to 8"):
            run_edit(editor, config, clip, "make it sepia", "teacher", 7.5, 1.5, 4, 5, False, clockwork=True,
                     clock=bad)


def test_the_preview_is_the_edits_first_frame_at_the_same_random_seed(editor, config, clip):
    image, info, seed = preview_frame(editor, config, clip, "make it sepia", "teacher", 7.5, 1.5, 2, None, True,
                                      rng=np.random.default_rng(5))
    assert image.shape == (SIDE, SIDE, 3) and image.dtype == np.uint8 and info["settings"]["frames"] == 1
    assert info["settings"]["seed"] == seed
    frames = read_clip(clip, short_side=SIDE, max_frames=config.max_frames).frames
    full = editor.edit_frames(frames, EditRequest.from_settings("make it sepia", s_t=7.5, s_i=1.5, steps=2,
                                                                seed=seed)).frames
    assert np.abs(image.astype(int) - full[0]).max() <= 1  # the clip's middle frame is the anchor of both
    _, edited = run_edit(editor, config, clip, "make it sepia", "teacher", 7.5, 1.5, 2, None, True, drawn=seed,
                         rng=np.random.default_rng(6))
    assert edited["settings"]["seed"] == seed  # Randomize: the edit keeps the seed its preview drew
    with pytest.raises(UserError, match="Upload a video"):
        preview_frame(editor, config, None, "make it sepia", "teacher", 7.5, 1.5, 2, 5, False)


def test_an_edit_decodes_its_clip_once(editor, config, clip, monkeypatch):
    import editor.video_io as video_io

    decodes = []
    real = video_io.iter_frames
    monkeypatch.setattr(video_io, "iter_frames", lambda *a, **k: decodes.append(a) or real(*a, **k))
    assert frames_to_edit(config, clip) == 4 and not decodes  # the header, not a decode
    bars = []
    run_edit(editor, config, clip, "make it sepia", "teacher", 7.5, 1.5, 1, 5, False,
             progress=lambda *a: bars.append(a))
    assert len(decodes) == 1 and bars[-1][:2] == (4, 4)


def test_the_edit_page_offers_512_px(editor, config, clip):
    _, info = run_edit(editor, config, clip, "make it sepia", "teacher", 7.5, 1.5, 1, 5, False, short_side=256)
    assert info["settings"]["size"] == "256x256"
    with pytest.raises(UserError, match="size must be one of 64, 256, 512"):
        run_edit(editor, config, clip, "make it sepia", "teacher", 7.5, 1.5, 1, 5, False, short_side=100)


# ----------------------------------------------------------------------------- a first visit

def test_the_first_variant_is_the_fastest_that_edits_well(onestep_family, tiny_family):
    from editor.variants import available_variants

    assert default_variant(available_variants(onestep_family)) == "onestep"
    assert default_variant(["teacher", "teacher+clockwork", "mmg", "mmg+clockwork-identity", "mmg+clockwork"]) == \
        "mmg+clockwork"
    assert default_variant(available_variants(tiny_family)) != "teacher"
    assert default_variant(["teacher"]) == "teacher" and default_variant([]) is None


def _app(editor, config):
    return App(editor, None, config, EditGate(), CostTable(editor.family))


def test_a_few_step_student_shows_its_step_options(onestep_family, config):
    given = [u.constructor_args if hasattr(u, "constructor_args") else u
             for u in on_variant("onestep", "mmg+clockwork", 20, 20)]
    clockwork, slider, options, _, previous, multi = given
    assert options == {"choices": [1, 2, 4], "value": 1, "visible": True}
    assert slider == {"value": 1, "visible": False} and clockwork == {"value": False}
    assert (previous, multi) == ("onestep", 20)  # the multi-step setting is kept ...
    clockwork, slider, options, *_ = (u.constructor_args for u in on_variant("mmg+clockwork", "onestep", 1, 20)[:4])
    assert slider == {"value": 20, "visible": True} and options == {"visible": False} and clockwork == {"value": True}
    slider, multi = on_variant("mmg", "mmg+clockwork", 12, 20)[1::4]
    assert slider.constructor_args == {"visible": True} and multi == 20  # ... a multi-step change leaves it alone


def test_costs_are_quoted_at_the_clips_real_size(editor, tmp_path, moving_frames):
    wide = write_clip(np.concatenate([moving_frames[:2]] * 2, axis=2), 8, tmp_path / "wide.mp4")  # 128x64
    config = AppConfig(short_side=SIDE, samples=(), output_dir=str(tmp_path), bench_speed=str(tmp_path / "no.json"))
    app = _app(editor, config)
    selector, table = on_costs(app, wide, SIDE, 4, 2)
    assert selector.label == "Variant (cost per frame at 128x64 px)"
    square = CostTable(editor.family).cost("teacher", 4, 2, (8, 8)).gflops
    label = dict((name, text) for text, name in selector.constructor_args["choices"])["teacher"]
    assert f"{CostTable(editor.family).cost('teacher', 4, 2, (8, 16)).gflops:.1f} GFLOPs" in label
    assert f"{square:.1f} GFLOPs" not in label
    assert list(table[table.variant == "teacher"]["size (px)"]) == ["128x64", "512x256", "1024x512"]
    selector, _ = on_costs(app, None, 256, 4, 2)
    assert selector.label == "Variant (cost per frame at 256x256 px)"


# Measured (README "Set up and run"): cosine of all-MiniLM-L6-v2's sentence embedding to the nearest other known
# paraphrase is >= 0.55 for 75 of 78 paraphrases and 25 of 26 held-out ones; "make the cars bright red" 0.52,
# "give the rabbit a red hat" 0.31.
OFF_WORLD = ("make the cars bright red", "give the rabbit a red hat", "replace the dog with a cat", "add fireworks")


def test_an_instruction_far_from_every_known_edit_gets_a_note(tiny_family):
    known = KnownEdits(tiny_family)
    for instruction in OFF_WORLD:
        note = known.note(instruction)
        assert "may not know this edit" in note and "pencil sketch" in note
        assert "python app.py --model timbrooks/instruct-pix2pix" in note
    assert all(known.note(p) == "" for fam in FAMILIES.values() for p in fam.paraphrases)
    assert known.note("make it look like it is snowing, please") == "" and known.note("  ") == ""
    held_out = [known.nearest(p) for p in ("make the scene look like nighttime", "draw it in pencil")]
    assert [fid for _, fid, _ in held_out] == ["night", "pencil_sketch"]


def test_another_text_encoder_gets_no_note(tiny_family):
    class Clip:
        def __call__(self, prompts):
            raise AssertionError("never encoded")

    assert KnownEdits(type("Family", (), {"text_encoder": Clip()})()).note("give the rabbit a red hat") == ""


def test_one_progress_bar_per_run_and_named_api_outputs(editor, store, config):
    from ui.blocks import build_app

    demo = build_app(editor, store, config)
    fns = {fn.api_name: fn for fn in demo.fns.values() if fn.api_name}
    for name, shown in (("edit", "edit-result"), ("preview", "edit-frame"), ("compare", "compare-left")):
        bars = fns[name].show_progress_on
        assert [b.elem_id for b in bars] == [shown], name  # one bar; the speed panel is never covered
    api = demo.get_api_info()["named_endpoints"]
    for name in ("/edit", "/preview", "/compare"):
        assert not [r for r in api[name]["returns"] if r["label"].startswith("value_")], name
        assert all(not p["parameter_name"].startswith("value_") for p in api[name]["parameters"])
    assert [p["parameter_name"] for p in api["/edit"]["parameters"]][-1] == "size"


# ----------------------------------------------------------------------------- compare

def test_compare_runs_both_at_one_seed(editor, config, clip, costs):
    bars = []
    full, cw, speed, quality, plot, settings = compare.run_compare(
        editor, config, costs, clip, "make it black and white", "teacher", 7.5, 1.5, 4, 2, None, True,
        progress=lambda *a: bars.append(a))
    assert settings["full"] == "teacher" and settings["clockwork"] == "teacher+clockwork-identity"
    assert settings["edit family"] == "black_and_white" and isinstance(settings["seed"], int)
    rows = dict(zip(speed.metric, zip(speed.full, speed.clockwork)))
    assert rows["UNet passes per frame"] == (12, 6) and rows["UNet GFLOPs per frame"][1] < rows[
        "UNet GFLOPs per frame"][0]
    assert list(plot.step) == [1, 2, 3, 4] * 2 and plot.GFLOPs.iloc[5] < plot.GFLOPs.iloc[4]
    a, b = read_clip(full).frames, read_clip(cw).frames
    assert a.shape == b.shape and len(a) == 4
    assert "PSNR to target 'black_and_white' (dB)" in list(quality.metric)
    assert bars[-1][:2] == (8, 8) and "clockwork run" in bars[-1][2]


def test_one_step_against_its_multi_step_teacher(onestep_family, config, clip):
    from editor.pipeline import Editor

    editor = Editor(onestep_family)
    costs = CostTable(onestep_family, (8, 8))
    bars = []
    slow, fast, speed, quality, plot, settings = compare.run_compare(
        editor, config, costs, clip, "invert the colors", "mmg", 7.5, 1.5, 4, 2, 3, False,
        progress=lambda *a: bars.append(a), mode=compare.ONESTEP)
    assert (settings["multi-step"], settings["one-step"], settings["seed"]) == ("mmg", "onestep", 3)
    assert settings["steps"] == {"multi-step": 4, "one-step": 4} and "clock" not in settings
    rows = dict(zip(speed.metric, zip(speed["multi-step"], speed["one-step"])))
    assert rows["UNet passes per frame"] == (4, 4) and "fps" in rows and "wall time (s)" in rows
    assert list(quality.metric) == ["PSNR multi-step vs one-step (dB)", "PSNR to target 'invert' (dB)",
                                    "flicker (vs target)"]
    assert bars[-1][:2] == (8, 8) and "one-step run" in bars[-1][2]
    *_, settings = compare.run_compare(editor, config, costs, clip, "invert the colors", "teacher", 7.5, 1.5, 20, 2,
                                       3, False, mode=compare.ONESTEP)
    assert settings["steps"] == {"multi-step": 20, "one-step": 1}
    assert compare.compare_modes(["teacher", "mmg", "onestep"]) == [compare.CLOCKWORK, compare.ONESTEP]
    assert compare.compare_modes(["teacher", "mmg"]) == [compare.CLOCKWORK]
    with pytest.raises(UserError, match="one of: mmg, teacher"):
        compare.run_compare(editor, config, costs, clip, "x", "onestep", 7.5, 1.5, 2, 2, 1, False,
                            mode=compare.ONESTEP)


def test_one_step_mode_needs_the_one_step_student(editor, config, clip, costs):
    with pytest.raises(UserError, match="no one-step student"):
        compare.run_compare(editor, config, costs, clip, "x", "teacher", 7.5, 1.5, 2, 2, 1, False,
                            mode=compare.ONESTEP)


def test_quality_table_against_a_known_target(moving_frames):
    target = FAMILIES["invert"].apply(moving_frames)
    table = compare.quality_table(moving_frames, target, target, "invert the colors")
    rows = dict(zip(table.metric, zip(table.full, table.clockwork)))
    assert rows["PSNR full vs clockwork (dB)"][0] == 100.0
    assert rows["PSNR to target 'invert' (dB)"] == (100.0, 100.0)
    assert rows["flicker (vs target)"] == (1.0, 1.0)
    unknown = compare.quality_table(moving_frames, moving_frames, target, "paint it like van gogh")
    assert list(unknown.metric) == ["PSNR full vs clockwork (dB)", "flicker (vs source)"]
    assert unknown.full[0] == round(psnr(moving_frames, target), 2)


def test_compare_needs_a_variant_with_clockwork(editor, config, clip, costs, monkeypatch):
    with pytest.raises(UserError, match="Unknown variant"):
        compare.run_compare(editor, config, costs, clip, "make it sepia", "nope", 7.5, 1.5, 2, 2, 1, False)
    monkeypatch.setattr(compare, "available_variants", lambda family: ["teacher"])
    with pytest.raises(UserError, match="no Clockwork version"):
        compare.run_compare(editor, config, costs, clip, "make it sepia", "teacher", 7.5, 1.5, 2, 2, 1, False)
    assert compare.compare_bases(["teacher", "teacher+clockwork-identity", "mmg"]) == ["teacher"]
    assert compare.default_compare_variant(["teacher", "mmg"]) == "mmg"
