"""Preference-rating study: vote storage (:mod:`editor.ratings.store`) and statistics (:mod:`editor.ratings.stats`).

No torch or Gradio imports here; the UI builds on top.
"""
from editor.ratings.stats import (
    bootstrap_bt, bradley_terry, elo, pairwise_table, per_instruction, wilson_interval,
)
from editor.ratings.store import (
    CHOICES, VOTE_COLUMNS, DuplicateVote, Store, VoteIn, default_url, file_sha256, pair_key,
)

__all__ = [
    "CHOICES", "VOTE_COLUMNS", "DuplicateVote", "Store", "VoteIn", "default_url", "file_sha256", "pair_key",
    "bootstrap_bt", "bradley_terry", "elo", "pairwise_table", "per_instruction", "wilson_interval",
]
