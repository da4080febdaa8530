"""Tests for editor.video_io; every clip is made on the fly in tmp_path with PyAV or PIL."""
from __future__ import annotations

import logging
import os
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from editor import video_io
from editor.video_io import (Clip, VideoError, VideoLimits, iter_frames, probe, read_clip,
                             working_size, write_clip)

W, H, T, FPS = 64, 48, 12, 12


# ----------------------------------------------------------------------------- helpers

def gradients(t: int = T, h: int = H, w: int = W) -> np.ndarray:
    """Smooth moving colour gradients, ``uint8 t h w 3``."""
    tt, yy, xx = np.arange(t)[:, None, None], np.arange(h)[None, :, None], np.arange(w)[None, None, :]
    r, g = xx * 180 / w + tt * 4, yy * 180 / h + tt * 2
    b = 100 + 50 * np.sin((xx + yy + 3 * tt) / 20.0)
    return np.stack(np.broadcast_arrays(r, g, b), -1).round().clip(0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def make_clip(path, frames=None, *, fps=FPS, codec="libx264", pix_fmt="yuv420p", in_format="rgb24",
              audio=False, pts_ms=None, rotation=None, options=None, container_options=None):
    """Write `frames` (rgb24 or rgba arrays) with PyAV; optional AAC sine audio, custom pts (VFR)
    in milliseconds, and a display-matrix rotation (counter-clockwise degrees, as PyAV takes it)."""
    frames = gradients() if frames is None else frames
    with av.open(str(path), "w", options=container_options or {}) as c:
        v = c.add_stream(codec, rate=fps, options=options or {})
        v.width, v.height, v.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        time_base = Fraction(1, 1000) if pts_ms is not None else Fraction(1, fps)
        v.codec_context.time_base = time_base
        if rotation is not None:
            v.set_display_rotation(rotation)
        a = c.add_stream("aac", rate=44100, layout="mono") if audio else None
        for i, arr in enumerate(frames):
            f = av.VideoFrame.from_ndarray(arr, format=in_format)
            f.pts, f.time_base = (pts_ms[i] if pts_ms is not None else i), time_base
            c.mux(v.encode(f))
        c.mux(v.encode(None))
        if a is not None:
            n = int(44100 * len(frames) / fps)
            wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / 44100)).astype(np.float32)[None]
            for s in range(0, n, 1024):
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, s:s + 1024]), format="fltp", layout="mono")
                af.sample_rate, af.pts, af.time_base = 44100, s, Fraction(1, 44100)
                c.mux(a.encode(af))
            c.mux(a.encode(None))
    return str(path)


def make_audio_only(path, codec="pcm_s16le", fmt="s16"):
    """One second of a 16 kHz mono tone, no video stream."""
    dtype = np.int16 if fmt == "s16" else np.float32
    samples = (np.sin(np.arange(16000) / 10) * (8000 if fmt == "s16" else 0.3)).astype(dtype)[None]
    with av.open(str(path), "w") as c:
        a = c.add_stream(codec, rate=16000, layout="mono")
        for s in range(0, 16000, 1024):
            f = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, s:s + 1024]), format=fmt, layout="mono")
            f.sample_rate, f.pts = 16000, s
            c.mux(a.encode(f))
        c.mux(a.encode(None))
    return str(path)


def streams(path):
    with av.open(str(path)) as c:
        return len(c.streams.video), len(c.streams.audio)


def grey_clip(levels):
    return np.broadcast_to(np.asarray(levels, np.uint8)[:, None, None, None], (len(levels), H, W, 3)).copy()


# ----------------------------------------------------------------------------- pure helpers

@pytest.mark.parametrize("size, kwargs, expected", [
    ((64, 48), {}, (344, 256)),
    ((48, 64), {}, (256, 344)),
    ((1920, 1080), {}, (456, 256)),
    ((256, 256), {}, (256, 256)),
    ((1920, 1080), {"short_side": 100, "multiple": 16}, (176, 96)),
    ((1000, 10), {"short_side": 4}, (400, 8)),
])
def test_working_size(size, kwargs, expected):
    assert working_size(*size, **kwargs) == expected
    assert all(s % kwargs.get("multiple", 8) == 0 for s in expected)


def test_working_size_rejects_nonpositive():
    with pytest.raises(ValueError):
        working_size(0, 10)


def test_limits_describe_and_validation():
    assert VideoLimits().describe() == "up to 200 MB, 30 s, 240 frames, 8192 px a side"
    for bad in ({"max_frames": 0}, {"max_seconds": -1.0}, {"max_bytes": 0}, {"max_side": 0}):
        with pytest.raises(ValueError):
            VideoLimits(**bad)


@pytest.mark.parametrize("cw", [0, 90, 180, 270])
def test_upright_helper(cw):
    img = np.zeros((2, 3, 1), np.uint8)
    img[0, 0] = 1  # top-left marker
    out = video_io._upright(img, cw)
    expected_pos = {0: (0, 0), 90: (0, 1), 180: (1, 2), 270: (2, 0)}[cw]
    assert out.shape[:2] == ((2, 3) if cw in (0, 180) else (3, 2))
    assert out[expected_pos] == 1


# ----------------------------------------------------------------------------- reading

def test_round_trip(tmp_path):
    frames = gradients()
    out = write_clip(frames, FPS, tmp_path / "out.mp4", crf=18)
    assert out == str(tmp_path / "out.mp4")
    clip = read_clip(out, short_side=H)
    assert isinstance(clip, Clip)
    assert clip.frames.shape == frames.shape and clip.frames.dtype == np.uint8
    assert clip.fps == FPS and clip.source_fps == FPS and clip.source_size == (W, H)
    assert not clip.truncated and clip.rotation == 0 and not clip.has_audio and clip.notes == ()
    assert psnr(clip.frames, frames) > 30
    info = probe(out)
    assert (info["width"], info["height"], info["n_frames"], info["rotation"]) == (W, H, T, 0)
    assert info["duration"] == pytest.approx(1.0, abs=0.1) and info["fps"] == FPS


def test_write_clip_is_browser_friendly(tmp_path):
    out = write_clip(gradients(), 30000 / 1001, tmp_path / "out.mp4")
    data = open(out, "rb").read()
    assert data.find(b"moov") < data.find(b"mdat")  # +faststart
    with av.open(out) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"
        assert s.average_rate == Fraction(30000, 1001)


def test_write_odd_size(tmp_path):
    frames = gradients(h=47, w=63)
    out = write_clip(frames, FPS, tmp_path / "odd.mp4")
    clip = read_clip(out, short_side=48)
    assert clip.source_size == (64, 48) and len(clip.frames) == T
    assert psnr(clip.frames[:, :47, :63], frames) > 30


def test_read_odd_size_source(tmp_path):
    frames = gradients(h=47, w=63)
    path = make_clip(tmp_path / "odd.mov", frames, codec="png", pix_fmt="rgb24")
    clip = read_clip(path, short_side=24)
    assert clip.source_size == (63, 47) and clip.frames.shape == (T, 24, 32, 3)


def test_bad_arguments(tmp_path):
    path = make_clip(tmp_path / "clip.mp4")
    for kwargs in ({"max_frames": 0}, {"fps": 0}, {"short_side": 0}):
        with pytest.raises(ValueError):
            read_clip(path, **kwargs)
    with pytest.raises(ValueError):
        write_clip(np.zeros((0, 8, 8, 3), np.uint8), FPS, tmp_path / "x.mp4")
    with pytest.raises(ValueError):
        write_clip(np.zeros((2, 8, 8, 3), np.float32), FPS, tmp_path / "x.mp4")


@pytest.mark.parametrize("name, codec, pix_fmt, options", [
    ("clip.mp4", "libx264", "yuv420p", {}),
    ("clip.mov", "libx264", "yuv420p", {}),
    ("clip.mkv", "libx264", "yuv420p", {}),
    ("clip.avi", "mpeg4", "yuv420p", {"qscale": "2"}),
    ("clip.webm", "libvpx-vp9", "yuv420p", {"deadline": "realtime", "cpu-used": "8", "crf": "20", "b": "0"}),
])
def test_containers(tmp_path, name, codec, pix_fmt, options):
    if codec not in av.codecs_available:
        pytest.skip(f"the bundled FFmpeg has no {codec} encoder")
    frames = gradients()
    path = make_clip(tmp_path / name, frames, codec=codec, pix_fmt=pix_fmt, options=options)
    clip = read_clip(path, short_side=H)
    assert clip.frames.shape == frames.shape
    assert clip.fps == pytest.approx(FPS)
    assert psnr(clip.frames, frames) > 25


def test_gif(tmp_path):
    frames = gradients(t=6)
    path = tmp_path / "clip.gif"
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)
    clip = read_clip(path, short_side=H)
    assert clip.frames.shape[1:] == (H, W, 3)
    assert len(clip.frames) == 6 and clip.fps == pytest.approx(10)
    assert psnr(clip.frames, frames) > 20  # GIF palette quantisation


def test_gif_with_transparency(tmp_path):
    path = tmp_path / "alpha.gif"
    img = np.zeros((H, W), np.uint8)
    img[:, W // 2:] = 1  # index 0 = transparent, index 1 = blue
    pal = Image.fromarray(img, mode="P")
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.save(path, transparency=0)
    clip = read_clip(path, short_side=H)
    assert clip.frames.shape == (1, H, W, 3)
    assert np.all(clip.frames[0, :, W // 2 + 4:] == [0, 0, 255])
    assert np.all(clip.frames[0, :, : W // 2 - 4] == 0)  # transparent -> black, not the hidden red


@pytest.mark.parametrize("name, codec, pix_fmt, in_format", [
    ("alpha.mov", "png", "rgba", "rgba"),
    ("alpha_rle.mov", "qtrle", "argb", "rgba"),
    pytest.param("alpha.webm", "libvpx-vp9", "yuva420p", "rgba", marks=pytest.mark.skipif(
        "libvpx-vp9" not in av.codecs_available, reason="no libvpx-vp9 in the bundled FFmpeg")),
])
def test_alpha_input(tmp_path, name, codec, pix_fmt, in_format):
    rgba = np.zeros((3, H, W, 4), np.uint8)
    rgba[..., 0] = 255                     # hidden red everywhere
    rgba[:, :, W // 2:] = [0, 255, 0, 255]  # opaque green on the right
    path = make_clip(tmp_path / name, rgba, codec=codec, pix_fmt=pix_fmt, in_format=in_format)
    clip = read_clip(path, short_side=H)
    assert clip.frames.shape == (3, H, W, 3)
    green = clip.frames[:, :, W // 2 + 4:].astype(int)
    assert np.abs(green - [0, 255, 0]).max() <= 4  # VP9 is lossy (yuv 4:2:0), PNG and QuickTime RLE are exact
    assert clip.frames[:, :, : W // 2 - 4].max() <= 4  # every codec: transparent -> black, not the hidden red
    assert "transparent areas composited over black" in clip.notes


def test_ten_bit_input(tmp_path):
    if "yuv420p10le" not in [f.name for f in av.codec.Codec("libx264", "w").video_formats]:
        pytest.skip("the bundled libx264 has no 10-bit support")
    frames = gradients()
    path = make_clip(tmp_path / "10bit.mkv", frames, pix_fmt="yuv420p10le")
    with av.open(path) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p10le"
    clip = read_clip(path, short_side=H)
    assert clip.frames.shape == frames.shape and psnr(clip.frames, frames) > 30


@pytest.mark.parametrize("ccw, cw", [(-90, 90), (180, 180), (90, 270)])
def test_rotation_tag_makes_frames_upright(tmp_path, ccw, cw):
    frames = np.zeros((2, H, W, 3), np.uint8)
    frames[:, :16, :16] = 255  # white block top-left of the coded picture
    path = make_clip(tmp_path / "phone.mp4", frames, rotation=ccw)
    info = probe(path)
    assert info["rotation"] == cw
    clip = read_clip(path, short_side=H)
    assert clip.rotation == cw and any("upright" in n for n in clip.notes)
    expected = video_io._upright(frames[0], cw)
    assert clip.source_size == (expected.shape[1], expected.shape[0])
    got = np.asarray(Image.fromarray(clip.frames[0]).resize(expected.shape[1::-1]))
    assert clip.frames.shape[1] % 8 == 0 and clip.frames.shape[2] % 8 == 0
    assert np.mean(np.abs(got.astype(int) - expected)) < 10


def test_variable_frame_rate_sampling(tmp_path):
    levels = [0, 25, 50, 75, 100, 125, 150, 175, 200, 225]
    pts_ms = [0, 50, 120, 130, 300, 310, 320, 600, 900, 1000]
    path = make_clip(tmp_path / "vfr.mkv", grey_clip(levels), pts_ms=pts_ms, options={"crf": "10"})
    clip = read_clip(path, short_side=H, fps=10)
    assert clip.fps == 10
    got = [int(np.argmin([abs(float(f.mean()) - lv) for lv in levels])) for f in clip.frames]
    # output time k/10 s takes the latest source frame with time <= k/10
    assert got[:11] == [0, 1, 3, 4, 6, 6, 7, 7, 7, 8, 9]
    assert len(got) in (11, 12)


def test_default_fps_is_capped_at_30(tmp_path):
    path = make_clip(tmp_path / "fast.mp4", gradients(t=12), fps=60)
    clip = read_clip(path, short_side=H)
    assert clip.source_fps == 60 and clip.fps == 30 and len(clip.frames) == 6
    assert any("resampled" in n for n in clip.notes)


def test_cut_at_max_seconds(tmp_path):
    path = make_clip(tmp_path / "long.mp4")
    clip = read_clip(path, short_side=H, limits=VideoLimits(max_seconds=0.5))
    assert len(clip.frames) == 6 and clip.truncated
    assert "cut to the first 0.5 s (limit 0.5 s)" in clip.notes


def test_cut_at_max_frames(tmp_path):
    path = make_clip(tmp_path / "long.mp4")
    clip = read_clip(path, short_side=H, max_frames=4)
    assert len(clip.frames) == 4 and clip.truncated
    assert "cut to the first 0.3 s (limit 4 frames at 12 fps)" in clip.notes
    clip = read_clip(path, short_side=H, max_frames=100, limits=VideoLimits(max_frames=5))
    assert len(clip.frames) == 5 and clip.truncated
    full = read_clip(path, short_side=H, max_frames=T)
    assert len(full.frames) == T and not full.truncated


def test_decoding_stops_once_enough_frames(tmp_path, monkeypatch):
    path = make_clip(tmp_path / "long.mp4", gradients(t=48))
    pulled = []
    real = video_io._decoded

    def counting(container, stream):
        for frame in real(container, stream):
            pulled.append(frame)
            yield frame

    monkeypatch.setattr(video_io, "_decoded", counting)
    read_clip(path, short_side=H, max_frames=3)
    assert len(pulled) <= 8  # probe's first frame + 3 kept + 1 look-ahead (+ slack), not 48


def test_iter_frames_is_lazy(tmp_path):
    path = make_clip(tmp_path / "clip.mp4")
    gen = iter_frames(path, fps=6, size=(32, 24))
    first = next(gen)
    assert first.shape == (24, 32, 3) and first.dtype == np.uint8
    gen.close()
    assert len(list(iter_frames(path, fps=6))) == 6


# ----------------------------------------------------------------------------- audio

def test_audio_is_carried_over(tmp_path):
    src = make_clip(tmp_path / "with_audio.mp4", audio=True)
    clip = read_clip(src, short_side=H)
    assert clip.has_audio and probe(src)["has_audio"]
    out = write_clip(clip.frames[:6], clip.fps, tmp_path / "out.mp4", audio_from=src)
    assert streams(out) == (1, 1)
    with av.open(out) as c:
        a = c.streams.audio[0]
        assert a.codec_context.name == "aac"
        samples = sum(f.samples for f in c.decode(a))
    assert samples / a.codec_context.sample_rate == pytest.approx(0.5, abs=0.05)  # trimmed to video


def test_audio_from_silent_or_bad_source_never_fails(tmp_path, caplog):
    frames = gradients(t=3)
    silent = make_clip(tmp_path / "silent.mp4")
    assert streams(write_clip(frames, FPS, tmp_path / "a.mp4", audio_from=silent)) == (1, 0)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 10)
    with caplog.at_level(logging.WARNING, logger="editor.video_io"):
        out = write_clip(frames, FPS, tmp_path / "b.mp4", audio_from=str(junk))
    assert streams(out) == (1, 0) and "without audio" in caplog.text


# ----------------------------------------------------------------------------- bad input

def expect_error(path, words, **kwargs):
    with pytest.raises(VideoError) as info:
        read_clip(path, short_side=H, **kwargs)
    assert words in str(info.value), str(info.value)
    return info.value


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.mp4", "does not exist")
    with pytest.raises(VideoError, match="does not exist"):
        probe(tmp_path / "nope.mp4")


def test_empty_file(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    expect_error(tmp_path / "empty.mp4", "the file is empty")


def test_directory_is_not_a_video(tmp_path):
    expect_error(tmp_path, "not a video file")


def test_text_file_renamed(tmp_path):
    (tmp_path / "notes.mp4").write_text("hello, this is just text\n" * 40)
    expect_error(tmp_path / "notes.mp4", "not a video file")


def test_random_bytes(tmp_path):
    (tmp_path / "noise.mkv").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    with pytest.raises(VideoError):
        read_clip(tmp_path / "noise.mkv")


def test_truncated_mp4(tmp_path):
    data = open(make_clip(tmp_path / "full.mp4", gradients(t=24)), "rb").read()
    (tmp_path / "half.mp4").write_bytes(data[: len(data) // 2])
    expect_error(tmp_path / "half.mp4", "the file is truncated or corrupt")


def test_truncated_faststart_mp4_keeps_what_decodes(tmp_path):
    full = make_clip(tmp_path / "full.mp4", gradients(t=24), container_options={"movflags": "+faststart"})
    data = open(full, "rb").read()
    (tmp_path / "half.mp4").write_bytes(data[: len(data) * 4 // 5])
    try:
        clip = read_clip(tmp_path / "half.mp4", short_side=H)
    except VideoError as e:
        assert "truncated or corrupt" in str(e) or "no frames" in str(e)
    else:
        assert 0 < len(clip.frames) < 24


@pytest.mark.parametrize("name, codec, fmt", [("voice.wav", "pcm_s16le", "s16"), ("voice.m4a", "aac", "fltp")])
def test_audio_only(tmp_path, name, codec, fmt):
    path = make_audio_only(tmp_path / name, codec, fmt)
    expect_error(path, "the clip has no video stream (audio only)")


def test_no_decodable_frames(tmp_path):
    data = bytearray(open(make_clip(tmp_path / "ok.mp4", container_options={"movflags": "+faststart"}), "rb").read())
    start = data.find(b"mdat") + 4
    data[start:] = bytes(len(data) - start)  # zero every coded picture
    (tmp_path / "blank.mp4").write_bytes(bytes(data))
    expect_error(tmp_path / "blank.mp4", "no frames could be decoded")


def test_too_big(tmp_path):
    path = make_clip(tmp_path / "clip.mp4")
    err = expect_error(path, "the limit is 1000 bytes", limits=VideoLimits(max_bytes=1000))
    assert str(err).startswith("file is ") and "KB" in str(err)


def test_too_many_pixels(tmp_path):
    path = make_clip(tmp_path / "clip.mp4")
    expect_error(path, "resolution 64x48 exceeds the limit of 32x32", limits=VideoLimits(max_side=32))


def test_size_message_format():
    assert video_io._human_bytes(600 * 2**20) == "600 MB"
    assert video_io._human_bytes(200 * 2**20) == "200 MB"
    assert video_io._human_bytes(1536) == "1.5 KB"


# ----------------------------------------------------------------------------- bounds before work (issue #34)

def test_working_size_keeps_a_pixel_budget():
    assert working_size(1920, 1080, short_side=1024, max_pixels=2**20) == (1360, 768)
    assert working_size(1920, 1080, max_pixels=2**20) == (456, 256)  # the budget does not bind
    w, h = working_size(8192, 1024, max_pixels=2**20)
    assert w * h <= 2**20 and w % 8 == h % 8 == 0


@pytest.mark.parametrize("size", [(8192, 16), (16, 8192), (1000, 100)])
def test_extreme_aspect_ratio_is_refused_before_decoding(tmp_path, size, monkeypatch):
    """8192x16 kept at a 256-pixel short side would be 131072x256 a frame (4.5 GiB for 48 frames, 9.7 GB peak
    and 106 s before this check); refused from the header, without decoding a single frame to the working size."""
    w, h = size
    path = make_clip(tmp_path / "thin.mp4", gradients(t=4, h=h, w=w))
    monkeypatch.setattr(video_io, "_frame_to_array", lambda *a: pytest.fail("decoded to the working size"))
    err = expect_error(path, "the limit is 8:1")
    assert f"{w}x{h} pixels" in str(err)


def test_an_allowed_wide_clip_stays_inside_the_pixel_budget(tmp_path):
    path = make_clip(tmp_path / "wide.mp4", gradients(t=2, h=16, w=120))
    clip = read_clip(path, short_side=256, limits=VideoLimits(max_working_pixels=64 * 1024))
    assert clip.frames.shape[1] * clip.frames.shape[2] <= 64 * 1024 and clip.frames.shape[1] < 256


def test_a_clip_cut_short_says_how_much_was_read(tmp_path):
    full = make_clip(tmp_path / "full.mp4", gradients(t=48), container_options={"movflags": "+faststart"})
    data = open(full, "rb").read()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) * 4 // 5])  # the header is a good part of this tiny file
    clip = read_clip(tmp_path / "cut.mp4", short_side=H)
    assert 0 < len(clip.frames) < 48
    assert f"read {len(clip.frames)} of 48 frames: the file is truncated or damaged; the frames read are edited" \
        in clip.notes
    assert not any("read " in n for n in read_clip(full, short_side=H).notes)


def test_padded_copies_play_and_cannot_be_told_apart_by_size(tmp_path):
    a = write_clip(gradients(t=4), 8, tmp_path / "a.mp4")
    b = write_clip(np.random.default_rng(0).integers(0, 255, (4, H, W, 3), dtype=np.uint8), 8, tmp_path / "b.mp4")
    size = video_io.padded_size([os.path.getsize(a), os.path.getsize(b)])
    copies = [video_io.padded_copy(p, tmp_path / f"c{k}.mp4", size) for k, p in enumerate((a, b, a))]
    assert {os.path.getsize(c) for c in copies} == {size} and size % video_io.PAD_BUCKET == 0
    assert open(copies[0], "rb").read() != open(copies[2], "rb").read()  # one render, two different files
    for src, copy in zip((a, b, a), copies):
        assert np.array_equal(read_clip(copy, short_side=H).frames, read_clip(src, short_side=H).frames)
    with pytest.raises(ValueError):
        video_io.padded_copy(b, tmp_path / "small.mp4", os.path.getsize(b))
