"""The evaluation and benchmark commands on the tiny random family: they run end to end and write the documented
JSON keys (the figures themselves are only meaningful on the shipped family)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from editor import video_io
from editor.eval import bench, evaluate


@pytest.fixture(scope="module")
def clips_dir(tmp_path_factory, moving_frames):
    folder = tmp_path_factory.mktemp("clips")
    video_io.write_clip(moving_frames[:3], 8.0, folder / "moving.mp4")
    return folder


def test_evaluate_with_clockwork_and_sweep(tmp_path, clips_dir, tiny_family_dir):
    out = tmp_path / "eval.json"
    evaluate.main(["--clips", str(clips_dir), "--model", str(tiny_family_dir), "--json", str(out), "--size", "32",
                   "--frames", "2", "--steps", "3", "--edits", "sepia,invert",
                   "--variants", "teacher,teacher+clockwork-identity", "--clock", "2",
                   "--sweep", "--sweep-tasks", "1", "--sweep-frames", "2", "--cache", str(tmp_path / "cache")])
    report = json.loads(out.read_text())
    # the s_I sweep's point at the default s_I (1.5) is the main run's edit for the swept task: one hit per variant
    assert report["cached_outputs"] == 2 and len(list((tmp_path / "cache").glob("*.npy"))) == 4 + 2 * 10 - 2
    again = evaluate.main(["--clips", str(clips_dir), "--model", str(tiny_family_dir), "--size", "32",
                           "--frames", "2", "--steps", "3", "--edits", "sepia,invert", "--variants", "teacher",
                           "--cache", str(tmp_path / "cache")])
    assert again["cached_outputs"] == 2 and again["variants"]["teacher"] == report["variants"]["teacher"]
    assert report["settings"]["clock"] == 2 and report["settings"]["model_source"] == str(tiny_family_dir)
    teacher, cw = report["variants"]["teacher"], report["variants"]["teacher+clockwork-identity"]
    assert teacher["psnr_to_full"] is None and teacher["psnr_to_reference"] is None
    assert cw["psnr_to_full"] == pytest.approx(cw["psnr_to_reference"])  # the full-step variant is the teacher here
    assert cw["n"] == 2 and set(cw["per_edit"]) == {"sepia", "invert"}
    # paired with the teacher (its reference and its full-step variant here): gains and losses are the differing rows
    th, ch = [r["hit"] for r in teacher["rows"]], [r["hit"] for r in cw["rows"]]
    want = {"gained": sum(c and not t for t, c in zip(th, ch)), "lost": sum(t and not c for t, c in zip(th, ch))}
    for key in ("paired_vs_reference", "paired_vs_full"):
        assert {k: cw[key][k] for k in want} == want and 0.0 < cw[key]["p_value"] <= 1.0
    assert "paired_vs_reference" not in teacher and "paired_vs_full" not in teacher
    assert cw["hits"] == sum(ch) and cw["accuracy_interval"][0] <= cw["instruction_accuracy"] <= cw["accuracy_interval"][1]
    for r in teacher["rows"] + cw["rows"]:  # a hit is exactly "the nearest target is the requested one"
        assert r["nearest"] in evaluate.edits.FAMILIES and r["hit"] == (r["nearest"] == r["edit"])
        assert r["hit"] == (r["hit_margin"] > 0)
    for axes in report["sweep"].values():
        assert axes["text"]["values"] == list(evaluate.SWEEP_TEXT) and len(axes["image"]["mean_curve"]) == 5
        assert -1.0 <= axes["text"]["spearman_mean"] <= 1.0 and len(axes["image"]["spearman_per_task"]) == 1
        assert all(a in (0.0, 1.0) for a in axes["text"]["instruction_accuracy"])  # one task: hit or miss
        for axis, extra in (("text", "edit_progress"), ("image", "structure_to_source")):
            also, task = axes[axis]["also"][extra], axes[axis]["tasks"][0]
            assert len(task["also"][extra]) == 5 and also["spearman_per_task"] == [
                evaluate.metrics.spearman(evaluate.SWEEP_AXES[axis][0], task["also"][extra])]
    # the swept task's point at the default s_T (2.5 is not swept) / s_I (1.5) is the main run's edit: same hit
    swept = report["sweep"]["teacher"]["text"]["tasks"][0]
    row = next(r for r in teacher["rows"] if (r["clip"], r["edit"]) == (swept["clip"], swept["edit"]))
    assert report["sweep"]["teacher"]["image"]["instruction_accuracy"][1] == float(row["hit"])
    ae = report["autoencoder_psnr"]
    assert set(ae["per_family"]) == {"sepia", "invert"} and all(v > 0 for v in ae["per_family"].values())
    exact = ae["exact_edit"]
    assert exact["n"] == 2 and {r["edit"] for r in exact["rows"]} == {"sepia", "invert"}
    assert all(r["hit"] == (r["nearest"] == r["edit"]) == (r["hit_margin"] > 0) for r in exact["rows"])
    # one slider only: the image sweep again, all from the cache, and no text sweep
    image_only = evaluate.main(["--clips", str(clips_dir), "--model", str(tiny_family_dir), "--size", "32",
                                "--frames", "2", "--steps", "3", "--edits", "sepia,invert", "--variants", "teacher",
                                "--sweep", "--sweep-tasks", "1", "--sweep-frames", "2", "--sweep-axes", "image",
                                "--cache", str(tmp_path / "cache")])
    assert list(image_only["sweep"]["teacher"]) == ["image"]
    assert image_only["sweep"]["teacher"]["image"] == report["sweep"]["teacher"]["image"]
    assert image_only["cached_outputs"] == 2 + 5
    # a custom s_T grid: the values it shares with the default grid come from the cache with the same curve points
    grid = [2.0, 3.5, 5.0]
    custom = evaluate.main(["--clips", str(clips_dir), "--model", str(tiny_family_dir), "--size", "32",
                            "--frames", "2", "--steps", "3", "--edits", "sepia,invert", "--variants", "teacher",
                            "--sweep", "--sweep-tasks", "1", "--sweep-frames", "2", "--sweep-axes", "text",
                            "--sweep-text", *map(str, grid), "--cache", str(tmp_path / "cache")])
    text, old = custom["sweep"]["teacher"]["text"], report["sweep"]["teacher"]["text"]
    assert text["values"] == grid and custom["cached_outputs"] == 2 + 2
    assert [text["tasks"][0]["curve"][i] for i in (0, 2)] == [old["tasks"][0]["curve"][i] for i in (0, 1)]
    with pytest.raises(SystemExit):
        evaluate.parse_args(["--clips", str(clips_dir), "--sweep-text", "5", "2", "8"])


def test_exact_edit_through_a_lossless_round_trip_hits_every_edit(moving_frames):
    """With a lossless autoencoder the reference level is the exact edit itself: every edit hits, at 100 dB (identical clips);
    a round trip that loses everything (a grey frame) leaves the edits nothing to go on."""
    clips = {"moving": moving_frames[:2]}
    targets = {"moving": evaluate.edits.all_targets(clips["moving"], 0)}
    fams = list(evaluate.edits.FAMILIES)
    exact = evaluate.exact_edit_through(lambda x: x, clips, targets, fams)
    assert exact["instruction_accuracy"] == 1.0 and exact["n"] == len(fams)
    assert all(r["psnr_to_target"] == 100.0 for r in exact["rows"])  # metrics.psnr of identical clips
    grey = evaluate.exact_edit_through(lambda x: np.full_like(x, 128), clips, targets, fams)
    assert grey["instruction_accuracy"] < 0.5


def test_spread_and_full_step_variant():
    assert evaluate.spread(list(range(10)), 3) == [0, 4, 9]  # round() rounds 4.5 to even
    assert evaluate.spread([1, 2], 5) == [1, 2]
    assert evaluate.full_step_variant("mmg+clockwork") == "mmg"
    assert evaluate.full_step_variant("teacher+clockwork-identity") == "teacher"
    assert evaluate.full_step_variant("mmg") is None


def test_bench_ratios_and_step_flops(tmp_path, tiny_family_dir):
    out = tmp_path / "bench.json"
    bench.main(["--model", str(tiny_family_dir), "--json", str(out), "--size", "32", "--frames", "2", "--steps", "4",
                "--variants", "teacher,teacher+clockwork-identity", "--repeats", "2"])
    report = json.loads(out.read_text())
    assert report["settings"]["repeats"] == 2 and report["settings"]["model_source"] == str(tiny_family_dir)
    lo, hi = report["ratio_range"]["teacher+clockwork-identity"]["per_step_speedup_vs_teacher"]
    assert lo <= report["ratios"]["teacher+clockwork-identity"]["per_step_speedup_vs_teacher"] <= hi
    cw = report["variants"]["teacher+clockwork-identity"]
    assert cw["unet_passes_per_frame"] == 6 and report["variants"]["teacher"]["unet_passes_per_frame"] == 12
    assert 0 < cw["step_gflops"]["adaptor"] < cw["step_gflops"]["full"]
    saving = report["ratios"]["teacher+clockwork-identity"]
    assert 0 < saving["unet_flops_saving_vs_full"] < 1 and "per_step_speedup_vs_teacher" in saving


def test_bench_ratios_are_medians_of_within_round_ratios():
    """A slow spell in one round must not move the headline ratio: each ratio is taken within a round, then the
    median over rounds is reported with its range."""
    def summary(unet_ms):
        return {"stage_ms_per_frame": {"unet": unet_ms}}

    rounds = [{"teacher": summary(300.0), "mmg": summary(100.0), "mmg+clockwork": summary(60.0)},
              {"teacher": summary(900.0), "mmg": summary(450.0), "mmg+clockwork": summary(150.0)},  # noisy round
              {"teacher": summary(330.0), "mmg": summary(100.0), "mmg+clockwork": summary(65.0)}]
    rows = {"mmg": {"gflops_per_frame": {"unet": 16.0}}, "mmg+clockwork": {"gflops_per_frame": {"unet": 10.0}},
            "teacher": {"gflops_per_frame": {"unet": 48.0}}}
    med, spread = bench.ratios(rounds, rows)
    assert med["mmg"]["per_step_speedup_vs_teacher"] == pytest.approx(3.0)
    assert spread["mmg"]["per_step_speedup_vs_teacher"] == pytest.approx([2.0, 3.3])
    assert med["mmg+clockwork"]["unet_wall_saving_vs_full"] == pytest.approx(0.4)
    assert spread["mmg+clockwork"]["unet_wall_saving_vs_full"] == pytest.approx([0.35, 2 / 3])
    assert med["mmg+clockwork"]["unet_flops_saving_vs_full"] == pytest.approx(0.375)
    summary_rows = bench.median_summary([{"frames": 2, "ms_per_frame": t, "fps": 1000 / t, "unet_passes_per_frame": 8,
                                          "stage_ms_per_frame": {"unet": t / 2}} for t in (100.0, 400.0, 120.0)])
    assert summary_rows["ms_per_frame"] == 120.0 and summary_rows["stage_ms_per_frame"]["unet"] == 60.0


def test_sweep_metrics_edit_progress_and_structure(moving_frames):
    m = evaluate.metrics
    src = moving_frames
    tgt = evaluate.edits.get_family("sepia").apply(src, 0)
    half = ((src.astype(np.float64) + tgt) / 2).round().astype(np.uint8)
    assert m.edit_progress(src, src, tgt) == 0.0 and m.edit_progress(tgt, src, tgt) == pytest.approx(1.0)
    assert m.edit_progress(half, src, tgt) == pytest.approx(0.5, abs=0.01)
    assert m.edit_progress(tgt, src, src) == 0.0  # no change requested
    # invert keeps every edge: structure is intact while PSNR to the source collapses
    inverted = 255 - src
    assert m.structure_to_source(inverted, src) == pytest.approx(1.0) and m.psnr(inverted, src) < 15
    assert m.structure_to_source(np.full_like(src, 128), src) == 0.0
    shifted = np.roll(src, 7, axis=2)
    assert m.structure_to_source(shifted, src) < 0.9
    with pytest.raises(ValueError):
        m.edit_progress(src[:1], src, tgt)
