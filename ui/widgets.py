"""Shared pieces of the layout: the app's config, the per-app services and the widgets several pages use.

Nothing here holds state at module level; :func:`ui.blocks.build_app` makes one :class:`App` per app.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import gradio as gr

from editor.guidance import IMAGE_RANGE, TEXT_RANGE
from editor.pipeline import Editor
from editor.study.store import Store
from editor.study.studies import DEFAULT_OUT as STUDIES_DIR
from editor.variants import available_variants
from editor.video_io import VideoLimits
from editor.world.edits import FAMILIES
from ui.common import CLOCK_RANGE, DEFAULT_CLOCK, SEED_RANGE, STEPS_RANGE, KnownEdits
from ui.costs import CostTable
from ui.serving import EditGate

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES_DIR = REPO_ROOT / "data" / "samples"
BENCH_SPEED = REPO_ROOT / "data" / "results" / "bench_speed.json"  # python -m editor.eval.bench writes it
EXAMPLE_EDITS = (("black_and_white", 0), ("sepia", 1), ("night", 2), ("snow", 1), ("cartoon", 0),
                 ("pencil_sketch", 1))  # (family, paraphrase index) shown as example instructions


def default_samples() -> tuple[str, ...]:
    """Sorted ``data/samples/*.mp4`` of the repository (empty when the folder is missing or empty)."""
    return tuple(str(p) for p in sorted(SAMPLES_DIR.glob("*.mp4"))) if SAMPLES_DIR.is_dir() else ()


def example_instructions() -> list[str]:
    """A handful of instructions from the edit families' paraphrases."""
    return [FAMILIES[name].paraphrases[i] for name, i in EXAMPLE_EDITS if name in FAMILIES]


@dataclass(frozen=True)
class AppConfig:
    """What the app needs besides the engine and the store."""

    title: str = "MoViE + Clockwork: edit a video with an instruction"
    limits: VideoLimits = VideoLimits()
    max_frames: int = 48
    short_side: int = 256
    samples: tuple[str, ...] = field(default_factory=default_samples)
    output_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="movie-app-"))
    studies_dir: str = str(STUDIES_DIR)  # pre-rendered study videos (python -m editor.study create --out)
    max_waiting: int = 4       # edits that may wait for the engine; more are refused with a busy message
    n_boot: int = 200          # bootstrap resamples of the Bradley-Terry intervals
    bench_speed: str = str(BENCH_SPEED)  # measured speed per variant and size, shown when the file exists


@dataclass(frozen=True)
class App:
    """What every page builder needs: the engine, the store, the config and the per-app services."""

    editor: Editor
    store: Store
    config: AppConfig
    gate: EditGate
    costs: CostTable

    @property
    def variants(self) -> list[str]:
        return available_variants(self.editor.family)

    @cached_property
    def known_edits(self) -> KnownEdits:
        """How near an instruction is to the edits the family knows (embedded once, on first use)."""
        return KnownEdits(self.editor.family)


# ----------------------------------------------------------------------------- shared widgets

def limits_line(config: AppConfig) -> str:
    """The Markdown line stating what clips the app accepts."""
    frames = min(config.max_frames, config.limits.max_frames)
    return (f"Clips {config.limits.describe()}; the first **{frames} frames** are edited, "
            f"resized to {config.short_side} px on the short side.")


def video_input(config: AppConfig, prefix: str) -> gr.Video:
    """Source video upload (element id ``<prefix>-video``), a button that replaces it with another clip without
    clearing it first (``<prefix>-replace``), its limits and the sample clips."""
    video = gr.Video(label="Source video", sources=["upload"], include_audio=True, autoplay=False,
                     elem_id=f"{prefix}-video")
    replace = gr.UploadButton("Upload another clip", file_types=["video"], size="sm", elem_id=f"{prefix}-replace")
    replace.upload(lambda f: f, inputs=[replace], outputs=[video], api_visibility="private", queue=False)
    gr.Markdown(limits_line(config))
    if config.samples:
        gr.Examples([[s] for s in config.samples], inputs=[video], label="Sample clips")
    return video


def instruction_input(prefix: str) -> gr.Textbox:
    """The instruction box (element id ``<prefix>-instruction``) with example instructions."""
    box = gr.Textbox(label="Instruction", placeholder="e.g. make it black and white", lines=1,
                     elem_id=f"{prefix}-instruction")
    gr.Examples([[s] for s in example_instructions()], inputs=[box], label="Example instructions")
    return box


def guidance_sliders(editor: Editor) -> tuple[gr.Slider, gr.Slider]:
    """Text and image guidance, with the family's defaults (the distilled students take them as inputs)."""
    g = editor.family.default_guidance
    return (gr.Slider(*TEXT_RANGE, value=g.text, step=0.1, label="Text guidance s_T",
                      info="how strongly the instruction is applied; higher edits more"),
            gr.Slider(*IMAGE_RANGE, value=g.image, step=0.1, label="Image guidance s_I",
                      info="how closely the result keeps to the source clip; higher keeps more"))


def steps_slider(editor: Editor, interactive: bool = True, visible: bool = True, value: int | None = None) -> gr.Slider:
    return gr.Slider(*STEPS_RANGE, value=value or editor.family.default_steps, step=1, label="Steps",
                     interactive=interactive, visible=visible)


def clock_slider() -> gr.Slider:
    return gr.Slider(*CLOCK_RANGE, value=DEFAULT_CLOCK, step=1, label="Clock",
                     info="Clockwork: the full UNet runs every clock-th step, the adaptor in between")


def seed_row() -> tuple[gr.Number, gr.Checkbox]:
    """Seed with a randomise switch."""
    with gr.Row():
        seed = gr.Number(0, precision=0, minimum=SEED_RANGE[0], maximum=SEED_RANGE[1], label="Seed")
        randomize = gr.Checkbox(True, label="Randomize")
    return seed, randomize


# Every player shows its first frame before it is played: browsers paint nothing for a <video> that has loaded only
# its metadata, so load its data and seek a hair past 0 once it is there. Installed once for the page (launch's
# ``head``), it serves every player of every page, including those Gradio replaces after an update.
FIRST_FRAME_HEAD = """
<script>
(() => {
  const ready = (v) => {
    if (v.dataset.firstFrame === "1") return;
    v.dataset.firstFrame = "1";
    v.preload = "auto";
    const show = () => { if (v.paused && v.currentTime === 0) v.currentTime = 0.001; };
    v.addEventListener("loadeddata", show);
    if (v.readyState >= 2) show();
  };
  const scan = () => document.querySelectorAll("video").forEach(ready);
  new MutationObserver(scan).observe(document.documentElement, {childList: true, subtree: true});
  scan();
})();
</script>
"""

# Two videos that play in sync: whatever one does (play, pause, seek), the other follows; the left one also
# corrects drift while playing. Installed after each update, since Gradio replaces the <video> elements.
SYNC_JS = """
() => {
  const pick = (id) => document.querySelector(`#${id} video`);
  const link = () => {
    const a = pick("%(left)s"), b = pick("%(right)s");
    if (!a || !b) return false;
    if (a.dataset.synced === "1" && b.dataset.synced === "1") return true;
    a.dataset.synced = "1"; b.dataset.synced = "1";
    const follow = (src, dst) => {
      src.addEventListener("play", () => { if (dst.paused) { dst.currentTime = src.currentTime; dst.play(); } });
      src.addEventListener("pause", () => { if (!dst.paused) dst.pause(); });
      src.addEventListener("seeked", () => {
        if (Math.abs(dst.currentTime - src.currentTime) > 0.05) dst.currentTime = src.currentTime; });
    };
    follow(a, b); follow(b, a);
    a.addEventListener("timeupdate", () => {
      if (!a.paused && Math.abs(b.currentTime - a.currentTime) > 0.15) b.currentTime = a.currentTime; });
    return true;
  };
  let tries = 0;
  const timer = setInterval(() => { if (link() || ++tries > 50) clearInterval(timer); }, 200);
}
"""
PLAY_BOTH_JS = """
() => {
  const vids = ["%(left)s", "%(right)s"].map((id) => document.querySelector(`#${id} video`)).filter(Boolean);
  vids.forEach((v) => { v.pause(); v.currentTime = 0; });
  vids.forEach((v) => v.play());
}
"""


@dataclass(frozen=True)
class SyncedPair:
    """Two videos side by side that play in sync, and a button that plays both from the start."""

    left: gr.Video
    right: gr.Video
    play: gr.Button
    ids: dict

    def after(self, event) -> None:
        """Link the two players once ``event`` has updated them."""
        event.then(None, js=SYNC_JS % self.ids)


def synced_videos(prefix: str, labels: tuple[str, str]) -> SyncedPair:
    """Two looping videos with ids ``<prefix>-left`` / ``<prefix>-right``, kept in sync by :data:`SYNC_JS`."""
    ids = {"left": f"{prefix}-left", "right": f"{prefix}-right"}
    with gr.Row():
        left = gr.Video(label=labels[0], interactive=False, loop=True, elem_id=ids["left"], buttons=["download"])
        right = gr.Video(label=labels[1], interactive=False, loop=True, elem_id=ids["right"], buttons=["download"])
    play = gr.Button("Play both from the start", size="sm", elem_id=f"{prefix}-play")
    play.click(None, js=PLAY_BOTH_JS % ids)
    return SyncedPair(left, right, play, ids)


CHOICE_LABELS = {"A": "A is better", "B": "B is better", "tie": "Tie", "both_bad": "Both are bad"}


def vote_buttons(prefix: str) -> dict[str, gr.Button]:
    """The four choices, keyed as the vote handlers take them (A = left, B = right)."""
    with gr.Row():
        return {key: gr.Button(label, interactive=False, elem_id=f"{prefix}-{key}",
                               variant="primary" if key in ("A", "B") else "secondary")
                for key, label in CHOICE_LABELS.items()}


def vote_outputs(buttons: dict, enabled: bool) -> list:
    """Updates that open (``enabled``) or close every vote button of :func:`vote_buttons`."""
    return [gr.Button(interactive=enabled) for _ in buttons]
