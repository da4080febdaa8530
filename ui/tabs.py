"""Page builders: each lays out one page and wires its events to the plain handlers.

Engine events (edit, preview, compare, making an A/B pair) share the concurrency id ``edit`` and pass through
the app's :class:`~ui.serving.EditGate`; votes and results have their own ids, so they never wait behind an edit.
"""
from __future__ import annotations

import functools

import gradio as gr

from editor.variants import VARIANTS
from ui import compare, handlers, rate, results, study
from ui.costs import one_step
from ui.serving import (EDIT_CONCURRENCY, RESULTS_CONCURRENCY, VOTE_CONCURRENCY, gated, gradio_handler,
                        progress_sink)
from ui.widgets import (REPO_ROOT, App, clock_slider, guidance_sliders, instruction_input, seed_row, steps_slider,
                        synced_videos, video_input, vote_buttons)

VOTE_LIMIT = 16  # votes handled at once (short database writes)


def engine_fn(app: App, fn, what: str):
    """An engine handler for Gradio: through the edit gate, with user errors shown as such."""
    return gradio_handler(gated(app.gate, fn), what)


def engine_event(app: App) -> dict:
    """Event options of every engine event: one shared concurrency id, bounded by the gate."""
    return {"concurrency_id": EDIT_CONCURRENCY, "concurrency_limit": app.gate.gradio_limit}


VOTE_EVENT = {"concurrency_id": VOTE_CONCURRENCY, "concurrency_limit": VOTE_LIMIT}
RESULTS_EVENT = {"concurrency_id": RESULTS_CONCURRENCY, "concurrency_limit": 4}
UI_EVENT = {"api_visibility": "private", "queue": False}


# ----------------------------------------------------------------------------- Edit

def on_variant(name: str):
    """The selector changed: tick Clockwork for a Clockwork variant, lock steps for a one-step variant."""
    variant = VARIANTS.get(name)
    if variant is None:
        return gr.skip(), gr.skip(), gr.skip()
    fixed = one_step(variant)
    return (gr.Checkbox(value=variant.clockwork is not None),
            gr.Slider(interactive=not fixed, info="one-step variant: always 1 step" if fixed else None),
            gr.Dropdown(info=variant.description))


def on_clockwork(name: str, on: bool, names: list[str]):
    """The Clockwork switch changed: select the matching variant."""
    chosen = handlers.with_clockwork(name, on, names)
    return gr.Dropdown(value=chosen, info=VARIANTS[chosen].description if chosen in VARIANTS else None)


def on_costs(app: App, steps, clock):
    """Steps or clock changed: relabel the selector with the new cost per frame."""
    try:
        return gr.Dropdown(choices=app.costs.choices(app.variants, int(steps), handlers.check_clock(clock)))
    except (TypeError, ValueError, handlers.UserError):
        return gr.skip()


def _variant_controls(app: App) -> tuple:
    """Variant selector (each variant with its cost per frame), Clockwork switch with its clock, steps."""
    names, steps0 = app.variants, app.editor.family.default_steps
    first = next((n for n in names if not handlers.uses_clockwork(n)), names[0] if names else None)
    side = app.config.short_side
    variant = gr.Dropdown(app.costs.choices(names, steps0), value=first,
                          label=f"Variant (cost per frame at {side}x{side} px)",
                          info=VARIANTS[first].description if first else None, elem_id="edit-variant")
    with gr.Row():
        clockwork = gr.Checkbox(False, label="Clockwork", info="reuse low-res UNet features between steps",
                                interactive=any(handlers.uses_clockwork(n) for n in names), elem_id="edit-clockwork")
        clock = clock_slider()
    steps = steps_slider(app.editor)
    variant.input(on_variant, inputs=[variant], outputs=[clockwork, steps, variant], **UI_EVENT)
    clockwork.input(functools.partial(on_clockwork, names=names), inputs=[variant, clockwork], outputs=[variant],
                    **UI_EVENT)
    gr.on([steps.change, clock.change], functools.partial(on_costs, app), inputs=[steps, clock], outputs=[variant],
          **UI_EVENT)
    return variant, clockwork, clock, steps


def _edit_fns(app: App):
    """The Edit and Preview buttons' functions, bound to the app."""

    def edit(video, instruction, variant, s_t, s_i, steps, seed, randomize, clockwork=False, clock=2,
             progress=gr.Progress()):
        """Edit the whole clip; returns the edited MP4 and the settings used with speed figures."""
        return handlers.run_edit(app.editor, app.config, video, instruction, variant, s_t, s_i, steps, seed,
                                 randomize, clockwork, clock, progress=progress_sink(progress), costs=app.costs)

    def preview(video, instruction, variant, s_t, s_i, steps, seed, randomize, clockwork=False, clock=2):
        """Edit only the first frame."""
        return handlers.preview_frame(app.editor, app.config, video, instruction, variant, s_t, s_i, steps, seed,
                                      randomize, clockwork, clock, costs=app.costs)

    return engine_fn(app, edit, "edit"), engine_fn(app, preview, "preview")


def edit_page(app: App) -> None:
    """Edit: inputs and settings on the left; preview, result and figures on the right."""
    with gr.Row():
        with gr.Column():
            video = video_input(app.config, "edit")
            instruction = instruction_input("edit")
            variant, clockwork, clock, steps = _variant_controls(app)
            s_t, s_i = guidance_sliders(app.editor)
            seed, randomize = seed_row()
            with gr.Row():
                preview_button = gr.Button("Preview first frame", elem_id="edit-preview")
                button = gr.Button("Edit", variant="primary", elem_id="edit-run")
        with gr.Column():
            frame = gr.Image(label="First frame preview", interactive=False, height=256, elem_id="edit-frame")
            result = gr.Video(label="Edited video", interactive=False, buttons=["download"], elem_id="edit-result")
            info = gr.JSON(label="Settings used and speed", open=True, elem_id="edit-info")
    edit, preview = _edit_fns(app)
    inputs = [video, instruction, variant, s_t, s_i, steps, seed, randomize, clockwork, clock]
    event = button.click(edit, inputs=inputs, outputs=[result, info], api_name="edit", **engine_event(app))
    preview_button.click(preview, inputs=inputs, outputs=[frame, info], api_name="preview", **engine_event(app))
    event.success(lambda i: i["settings"]["seed"], inputs=[info], outputs=[seed], **UI_EVENT)


# ----------------------------------------------------------------------------- Compare

def compare_page(app: App) -> None:
    """Compare: the same edit with full-step sampling and with Clockwork, side by side, with figures."""
    bases = compare.compare_bases(app.variants)
    with gr.Row():
        with gr.Column(scale=1):
            video = video_input(app.config, "compare")
            instruction = instruction_input("compare")
            variant = gr.Dropdown(bases, value=compare.default_compare_variant(bases), label="Variant",
                                  info="run with full steps, then with Clockwork")
            clock = clock_slider()
            steps = steps_slider(app.editor)
            s_t, s_i = guidance_sliders(app.editor)
            seed, randomize = seed_row()
            button = gr.Button("Compare", variant="primary", elem_id="compare-run")
        with gr.Column(scale=2):
            pair = synced_videos("compare", ("Full-step sampling", "With Clockwork"))
            speed = gr.Dataframe(label="Speed (per run; saving = Clockwork vs full)", interactive=False)
            quality = gr.Dataframe(label="Quality", interactive=False)
            plot = gr.LinePlot(x="step", y="GFLOPs", color="run", title="UNet GFLOPs per frame at each step",
                               label="Cost per step")
            settings = gr.JSON(label="Settings used")

    def run(video, instruction, variant, s_t, s_i, steps, clock, seed, randomize, progress=gr.Progress()):
        """Run both edits and measure them."""
        return compare.run_compare(app.editor, app.config, app.costs, video, instruction, variant, s_t, s_i, steps,
                                   clock, seed, randomize, progress=progress_sink(progress))

    event = button.click(engine_fn(app, run, "comparison"),
                         inputs=[video, instruction, variant, s_t, s_i, steps, clock, seed, randomize],
                         outputs=[pair.left, pair.right, speed, quality, plot, settings], api_name="compare",
                         **engine_event(app))
    pair.after(event)


# ----------------------------------------------------------------------------- Rate

def _ensure_rater(current: str | None) -> tuple[str, str]:
    """On page load: the browser's rater id (a new one on the first visit) and the line that shows it."""
    rater_id = rate.ensure_rater_id(current)
    return rater_id, f"Your anonymous rater id: `{rater_id}` (kept in this browser)."


def _vote_outputs(buttons: dict, enabled: bool) -> list:
    return [gr.Button(interactive=enabled) for _ in buttons]


def rate_page(app: App, rater: gr.BrowserState, demo: gr.Blocks) -> None:
    """Rate: a blinded A/B of two variants on the same input; names are revealed after the vote."""
    challenger, teacher = rate.default_pair(app.variants, app.costs, app.editor.family.default_steps)
    rater_md = gr.Markdown(elem_id="rate-rater")
    with gr.Row():
        with gr.Column(scale=1):
            video = video_input(app.config, "rate")
            instruction = instruction_input("rate")
            with gr.Row():
                variant_a = gr.Dropdown(app.variants, value=challenger, label="First variant")
                variant_b = gr.Dropdown(app.variants, value=teacher, label="Second variant")
            s_t, s_i = guidance_sliders(app.editor)
            steps = steps_slider(app.editor)
            seed, randomize = seed_row()
            make = gr.Button("Make a blinded pair", variant="primary", elem_id="rate-make")
        with gr.Column(scale=2):
            pair_videos = synced_videos("rate", ("A", "B"))
            buttons = vote_buttons("rate")
            reveal = gr.Markdown(elem_id="rate-reveal")
    pair = gr.State(None)
    demo.load(_ensure_rater, inputs=[rater], outputs=[rater, rater_md], **UI_EVENT)

    def make_pair(video, instruction, a, b, s_t, s_i, steps, seed, randomize, progress=gr.Progress()):
        """Render the pair; the vote buttons open once it is shown."""
        left, right, p = rate.render_pair(app.editor, app.config, video, instruction, a, b, s_t, s_i, steps, seed,
                                          randomize, progress=progress_sink(progress))
        return left, right, p, "", *_vote_outputs(buttons, True)

    outputs = [pair_videos.left, pair_videos.right, pair, reveal, *buttons.values()]
    event = make.click(engine_fn(app, make_pair, "pair"),
                       inputs=[video, instruction, variant_a, variant_b, s_t, s_i, steps, seed, randomize],
                       outputs=outputs, api_name="pair", **engine_event(app))
    pair_videos.after(event)
    for choice, button in buttons.items():
        button.click(gradio_handler(functools.partial(_ui_vote, app, buttons, choice), "vote"),
                     inputs=[rater, pair], outputs=[reveal, pair, *buttons.values()], api_visibility="private",
                     **VOTE_EVENT)
    _vote_api(app)


def _ui_vote(app: App, buttons: dict, choice: str, rater_id: str | None, pair: dict | None):
    """A vote button on the Rate page: store the vote, reveal the names, close the buttons."""
    voted = rate.cast_vote(app.store, rater_id, pair, choice)
    return voted["reveal"], None, *_vote_outputs(buttons, False)


def _vote_api(app: App) -> None:
    """The ``/vote`` endpoint: the vote of any client (the load script, study tools) on a pair it was shown."""

    def vote(rater_id: str, pair: dict, choice: str, decide_ms: float | None = None) -> dict:
        """Store one vote. ``pair``: the pair as shown (variant_a/b, params_a/b, seed_a/b, clip_hash, instruction,
        shown_left); ``choice``: ``A`` (left), ``B`` (right), ``tie`` or ``both_bad``. Returns the vote id, the
        choice in canonical sides and the reveal text."""
        return rate.cast_vote(app.store, rater_id, pair, choice, decide_ms, session_id="api")

    gr.api(gradio_handler(vote, "vote"), api_name="vote", **VOTE_EVENT)


# ----------------------------------------------------------------------------- Study

def _study_admin(app: App):
    """The admin's part of the Study page: create (pre-render) a study from a manifest, list the studies with
    their votes and the raters that gold pairs flag as careless."""
    with gr.Accordion("Admin: studies", open=False):
        gr.Markdown("A manifest lists clips x instructions x variant pairs, the sampler params and how many gold "
                    "pairs to add (see `python -m editor.study --help`); relative clip paths are taken from the "
                    "app's folder. Creating renders every pair first, so raters never wait. The same command on "
                    "the server: `python -m editor.study create --manifest M.json`.")
        token = gr.Textbox(label="Admin token", type="password", elem_id="study-token")
        manifest = gr.File(label="Study manifest (JSON)", file_types=[".json"], type="filepath",
                           elem_id="study-manifest")
        with gr.Row():
            create = gr.Button("Create and pre-render", elem_id="study-create")
            show = gr.Button("List studies")
        status = gr.Markdown(elem_id="study-status")
        table = gr.Dataframe(label="Studies", interactive=False)

    def create_study(token_value, manifest_path, progress=gr.Progress()):
        """Pre-render the manifest's pairs (through the engine gate) and record the study."""
        bar = (lambda done, total: progress((done, total), desc="Rendering the study", unit="edits"))
        return study.create_from_manifest(app.store, app.editor, token_value, manifest_path, app.config.studies_dir,
                                          REPO_ROOT, bar)

    created = create.click(engine_fn(app, create_study, "study creation"), inputs=[token, manifest],
                           outputs=[table, status], api_visibility="private", **engine_event(app))
    show.click(gradio_handler(functools.partial(study.study_overview, app.store), "study list"), inputs=[token],
               outputs=[table], api_name="studies", **RESULTS_EVENT)
    return created


def study_page(app: App, rater: gr.BrowserState, tab: gr.Tab) -> None:
    """Study: raters work through a prepared study's pre-rendered pairs in their own random order."""
    gr.Markdown(study.RATER_INSTRUCTIONS)
    with gr.Row():
        picker = gr.Dropdown([], label="Study", allow_custom_value=True, scale=3, elem_id="study-picker")
        start = gr.Button("Start / continue", variant="primary", scale=1, elem_id="study-start")
    progress = gr.Markdown(elem_id="study-progress")
    videos = synced_videos("study", ("A", "B"))
    buttons = vote_buttons("study")
    reveal = gr.Markdown(elem_id="study-reveal")
    pair = gr.State(None)
    created = _study_admin(app)
    refresh = functools.partial(lambda store: gr.Dropdown(choices=study.study_choices(store)), app.store)
    tab.select(refresh, outputs=[picker], **UI_EVENT)
    created.success(refresh, outputs=[picker], **UI_EVENT)

    def begin(study_id, rater_id):
        left, right, line, p = study.study_next(app.store, study_id, rater_id)
        return left, right, line, p, "", *_vote_outputs(buttons, p is not None)

    def vote(choice, rater_id, p):
        shown, left, right, line, nxt = study.study_vote(app.store, rater_id, p, choice)
        return left, right, line, nxt, shown, *_vote_outputs(buttons, nxt is not None)

    outputs = [videos.left, videos.right, progress, pair, reveal, *buttons.values()]
    videos.after(start.click(gradio_handler(begin, "study"), inputs=[picker, rater], outputs=outputs,
                             api_visibility="private", **VOTE_EVENT))
    for choice, button in buttons.items():
        videos.after(button.click(gradio_handler(functools.partial(vote, choice), "vote"), inputs=[rater, pair],
                                  outputs=outputs, api_visibility="private", **VOTE_EVENT))


# ----------------------------------------------------------------------------- Results

def results_page(app: App, tab: gr.Tab) -> None:
    """Results: win rates with Wilson intervals, Bradley-Terry with bootstrap intervals, per instruction, CSV."""
    with gr.Row():
        picker = gr.Dropdown([("All votes", results.ALL)], value=results.ALL, label="Study",
                             allow_custom_value=True, scale=3)
        refresh = gr.Button("Refresh", scale=1, elem_id="results-refresh")
    summary = gr.Markdown(elem_id="results-summary")
    with gr.Row():
        win_plot = gr.BarPlot(x="pair", y="A win rate", title="Win rate of the first-named variant", y_lim=[0, 1])
        bt_plot = gr.BarPlot(x="variant", y="BT score", title="Bradley-Terry score (log-strength)")
    pairs = gr.Dataframe(label="Per pair: win rate of variant A, Wilson 95% interval", interactive=False,
                         elem_id="results-pairs")
    bt = gr.Dataframe(label="Bradley-Terry scores, bootstrap 95% interval (ties count half)", interactive=False,
                      elem_id="results-bt")
    per_instruction = gr.Dataframe(label="Per instruction", interactive=False)
    with gr.Accordion("Admin: export the votes as CSV", open=False):
        token = gr.Textbox(label="Admin token", type="password")
        export = gr.Button("Export CSV")
        csv_file = gr.File(label="Votes (CSV)")

    def show(study_id):
        return results.results(app.store, study_id, app.config.n_boot)

    outputs = [summary, pairs, bt, per_instruction, win_plot, bt_plot]
    fn = gradio_handler(show, "results")
    refresh.click(fn, inputs=[picker], outputs=outputs, api_name="results", **RESULTS_EVENT)
    picker.input(fn, inputs=[picker], outputs=outputs, api_visibility="private", **RESULTS_EVENT)
    tab.select(lambda: gr.Dropdown(choices=results.study_filter_choices(app.store)), outputs=[picker],
               **UI_EVENT).then(fn, inputs=[picker], outputs=outputs, api_visibility="private", **RESULTS_EVENT)
    export.click(gradio_handler(lambda t, s: results.export_csv(app.store, t, s, app.config.output_dir), "export"), inputs=[token, picker],
                 outputs=[csv_file], api_name="export", **RESULTS_EVENT)
