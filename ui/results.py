"""Results page: the leaderboard of the preference votes (docs/DESIGN.md section 6), optionally of one study.

Per pair of variants: win rate with its Wilson 95 % interval; per variant: Bradley-Terry log-strength with a
bootstrap 95 % interval and its Elo-like value (ties and "both bad" count half, as in FastChat's arena); the same
pairwise table per instruction; CSV export of the raw votes for admins.  Votes on gold pairs check the raters and
are never ranked (their broken side is no variant); an interval is shown only from :data:`MIN_VOTES` votes on,
before that the table says "too few votes".
"""
from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path

import gradio as gr
import pandas as pd

from editor.study.stats import bootstrap_bt, elo, pairwise_table, per_instruction
from editor.study.store import Store
from editor.study.studies import BROKEN_VARIANT, admin_ok
from ui.common import UserError
from ui.serving import RESULTS_EVENT, UI_EVENT, gradio_handler
from ui.widgets import App

ALL = ""  # the study filter's value for "all votes"
MIN_VOTES = 5  # votes a pair (or a variant) needs before its interval is shown
TOO_FEW = "too few votes"
PAIR_COLUMNS = ["variant A", "variant B", "votes", "A wins", "B wins", "ties", "both bad", "A win rate",
                "CI low", "CI high"]
BT_COLUMNS = ["variant", "BT score", "CI low", "CI high", "Elo"]


def plural(n: int, noun: str) -> str:
    """``'1 vote'``, ``'2 votes'``."""
    return f"{n} {noun}{'s' if n != 1 else ''}"


def study_filter_choices(store: Store) -> list[tuple[str, str]]:
    """``(label, value)`` of the study filter: all votes, then every study by name."""
    return [("All votes", ALL)] + [(f"{s['name']} ({s['id'][:8]})", s["id"]) for s in store.studies()]


def ranked(votes: list[dict]) -> list[dict]:
    """The votes that rank variants: all but those on gold pairs (one side is the broken pseudo-variant)."""
    return [v for v in votes if BROKEN_VARIANT not in (v["variant_a"], v["variant_b"])]


def _interval(n: int, low: float, high: float) -> tuple:
    """``(low, high)`` rounded, or :data:`TOO_FEW` twice under :data:`MIN_VOTES` votes."""
    return (round(low, 4), round(high, 4)) if n >= MIN_VOTES else (TOO_FEW, TOO_FEW)


def _pair_rows(table: list[dict]) -> list[dict]:
    """:func:`pairwise_table` rows under the page's column names, rates rounded to 4 places."""
    return [dict(zip(PAIR_COLUMNS, (r["variant_a"], r["variant_b"], r["n"], r["wins_a"], r["wins_b"], r["ties"],
                                     r["both_bad"], round(r["win_rate_a"], 4),
                                     *_interval(r["n"], r["ci_low"], r["ci_high"]))))
            for r in table]


def pair_frame(votes: list[dict]) -> pd.DataFrame:
    """Win rates of the first-named variant of each pair with Wilson 95 % intervals."""
    return pd.DataFrame(_pair_rows(pairwise_table(votes)), columns=PAIR_COLUMNS)


def bt_frame(votes: list[dict], n_boot: int = 200) -> pd.DataFrame:
    """Bradley-Terry scores with bootstrap 95 % intervals, best first."""
    scores = bootstrap_bt(votes, n_boot=n_boot)
    elos = elo({k: s for k, (s, _, _) in scores.items()})
    counts = {k: sum(k in (v["variant_a"], v["variant_b"]) for v in votes) for k in scores}
    rows = [dict(zip(BT_COLUMNS, (k, round(s, 4), *_interval(counts[k], lo, hi), round(elos[k], 1))))
            for k, (s, lo, hi) in scores.items()]
    return pd.DataFrame(sorted(rows, key=lambda r: -r["BT score"]), columns=BT_COLUMNS)


def instruction_frame(votes: list[dict]) -> pd.DataFrame:
    """The pairwise table per instruction."""
    rows = [{"instruction": k, **r} for k, table in per_instruction(votes).items() for r in _pair_rows(table)]
    return pd.DataFrame(rows, columns=["instruction", *PAIR_COLUMNS])


def win_plot_frame(pairs: pd.DataFrame) -> pd.DataFrame:
    """Long format for the win-rate bar plot: one bar per pair (the first-named variant's win rate)."""
    labels = [f"{a} vs {b}" for a, b in zip(pairs["variant A"], pairs["variant B"])]
    return pd.DataFrame({"pair": labels, "A win rate": pairs["A win rate"]})


def results(store: Store, study_id: str | None = ALL, n_boot: int = 200) -> tuple:
    """Everything the Results page shows for ``study_id`` (all votes when empty):
    ``(summary markdown, pairs, Bradley-Terry, per instruction, win-rate plot, Bradley-Terry plot)``."""
    if study_id and store.study(study_id) is None:
        raise UserError("No study with that id.")
    votes = store.votes(study_id or None)
    rank = ranked(votes)
    pairs, bt = pair_frame(rank), bt_frame(rank, n_boot)
    raters = len({v["rater_id"] for v in votes})
    summary = f"**{plural(len(votes), 'vote')}** from **{plural(raters, 'rater')}**" + (f" in study `{study_id}`" if study_id else "")
    if len(rank) < len(votes):
        summary += f" ({plural(len(votes) - len(rank), 'vote')} on gold check pairs, not ranked)"
    return summary, pairs, bt, instruction_frame(rank), win_plot_frame(pairs), bt[["variant", "BT score"]]


def export_csv(store: Store, token: str | None, study_id: str | None = ALL, folder: str | None = None) -> str:
    """Write the votes (of ``study_id``, or all) as CSV for an admin; returns the file's path."""
    if not admin_ok(token):
        raise UserError("Export needs the admin token (the server's MOVIE_ADMIN_TOKEN).")
    if study_id and store.study(study_id) is None:
        raise UserError("No study with that id.")
    out = Path(folder or tempfile.mkdtemp(prefix="movie-export-"))
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"votes-{study_id[:8] if study_id else 'all'}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}.csv"
    store.export_csv(path, study_id or None)
    return str(path)


# ----------------------------------------------------------------------------- layout

def results_page(app: App, tab: gr.Tab) -> None:
    """Results: win rates with Wilson intervals, Bradley-Terry with bootstrap intervals, per instruction, CSV."""
    with gr.Row():
        picker = gr.Dropdown([("All votes", ALL)], value=ALL, label="Study",
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
        return results(app.store, study_id, app.config.n_boot)

    outputs = [summary, pairs, bt, per_instruction, win_plot, bt_plot]
    fn = gradio_handler(show, "results")
    refresh.click(fn, inputs=[picker], outputs=outputs, api_name="results", **RESULTS_EVENT)
    picker.input(fn, inputs=[picker], outputs=outputs, api_visibility="private", **RESULTS_EVENT)
    tab.select(lambda: gr.Dropdown(choices=study_filter_choices(app.store)), outputs=[picker],
               **UI_EVENT).then(fn, inputs=[picker], outputs=outputs, api_visibility="private", **RESULTS_EVENT)
    export.click(gradio_handler(lambda t, s: export_csv(app.store, t, s, app.config.output_dir), "export"), inputs=[token, picker],
                 outputs=[csv_file], api_name="export", **RESULTS_EVENT)
