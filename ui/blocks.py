"""The app's layout: ``build_app(editor, config)`` lays out the components and wires them to :mod:`ui.handlers`.

Nothing here holds state at module level; the engine and the config come in as arguments and are bound to the
handlers with closures. The handlers stay Gradio-free; the thin wrapper here adds ``gr.Progress`` and turns
:class:`ui.handlers.UserError` into ``gr.Error``.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from editor.edits import FAMILIES
from editor.guidance import IMAGE_RANGE, TEXT_RANGE
from editor.pipeline import Editor
from editor.variants import VARIANTS, available_variants
from editor.video_io import VideoLimits
from ui import handlers

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES_DIR = REPO_ROOT / "data" / "samples"
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
    """What the app needs besides the engine."""

    title: str = "MoViE + Clockwork: edit a video with an instruction"
    limits: VideoLimits = VideoLimits()
    max_frames: int = 48
    short_side: int = 256
    samples: tuple[str, ...] = field(default_factory=default_samples)
    output_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="movie-app-"))


def _progress_callback(progress: gr.Progress):
    """The engine's ``(done, total)`` callback, feeding Gradio's progress bar."""
    return lambda done, total: progress((done, total), desc="Denoising", unit="steps")


def edit_function(editor: Editor, config: AppConfig):
    """The Edit button's function: :func:`ui.handlers.run_edit` bound to ``editor`` and ``config``."""

    def edit(video, instruction, variant, s_t, s_i, steps, seed, randomize, progress=gr.Progress()):
        """Edit `video` with `instruction`; returns the edited MP4 and the settings used with speed figures."""
        try:
            return handlers.run_edit(editor, config, video, instruction, variant, s_t, s_i, steps, seed,
                                     randomize, progress=_progress_callback(progress))
        except handlers.UserError as e:
            raise gr.Error(str(e)) from e
        except Exception as e:
            log.exception("edit failed")
            raise gr.Error("The edit failed with an internal error; the server log has the details.") from e

    return edit


def _limits_line(config: AppConfig) -> str:
    """The Markdown line stating what clips the app accepts."""
    frames = min(config.max_frames, config.limits.max_frames)
    return (f"Clips {config.limits.describe()}; the first **{frames} frames** are edited, "
            f"resized to {config.short_side} px on the short side.")


def _input_column(config: AppConfig) -> gr.Video:
    """Source video, its limits and the sample clips."""
    video = gr.Video(label="Source video", sources=["upload"], include_audio=True)
    gr.Markdown(_limits_line(config))
    if config.samples:
        gr.Examples([[s] for s in config.samples], inputs=[video], label="Sample clips")
    return video


def _settings(editor: Editor) -> tuple:
    """Variant, guidance, steps and seed controls, with the model family's defaults."""
    family = editor.family
    names = available_variants(family)
    variant = gr.Dropdown(names, value=names[0] if names else None, label="Variant",
                          info=VARIANTS[names[0]].description if names else None)
    s_t = gr.Slider(*TEXT_RANGE, value=family.default_guidance.text, step=0.1, label="Text guidance s_T")
    s_i = gr.Slider(*IMAGE_RANGE, value=family.default_guidance.image, step=0.1, label="Image guidance s_I")
    steps = gr.Slider(*handlers.STEPS_RANGE, value=family.default_steps, step=1, label="Steps")
    with gr.Row():
        seed = gr.Number(0, precision=0, minimum=handlers.SEED_RANGE[0], maximum=handlers.SEED_RANGE[1],
                         label="Seed")
        randomize = gr.Checkbox(True, label="Randomize")
    return variant, s_t, s_i, steps, seed, randomize


def _edit_tab(editor: Editor, config: AppConfig) -> None:
    """The Edit tab: inputs and settings on the left, result and info on the right."""
    with gr.Row():
        with gr.Column():
            video = _input_column(config)
            instruction = gr.Textbox(label="Instruction", placeholder="e.g. make it black and white", lines=1)
            gr.Examples([[s] for s in example_instructions()], inputs=[instruction], label="Example instructions")
            settings = _settings(editor)
            button = gr.Button("Edit", variant="primary")
        with gr.Column():
            result = gr.Video(label="Edited video", interactive=False, buttons=["download"])
            info = gr.JSON(label="Settings used and speed", open=True)
    event = button.click(edit_function(editor, config), inputs=[video, instruction, *settings],
                         outputs=[result, info], api_name="edit")
    seed = settings[4]
    event.success(lambda i: i["settings"]["seed"], inputs=[info], outputs=[seed], api_visibility="private")


def build_app(editor: Editor, config: AppConfig | None = None) -> gr.Blocks:
    """The whole app for ``editor``; launch it with ``.queue(...).launch(...)``."""
    config = config or AppConfig()
    with gr.Blocks(title=config.title, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(f"# {config.title}\nUpload a short clip, type what should change, press **Edit**.")
        with gr.Tab("Edit"):
            _edit_tab(editor, config)
    return demo
