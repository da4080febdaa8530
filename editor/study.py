"""Preference study backend: what the Study and Rate tabs call, and a command that pre-renders a study.

A study (DESIGN.md section 6) is a manifest of clips x instructions x variant pairs whose edits are rendered
before any rater arrives, so raters never wait for generation.  Every rater sees the pairs in their own random
order (:func:`rater_order`), seeded by the study and rater ids so a reload gives the same order; a few gold pairs
with one plainly broken side flag careless raters (:meth:`editor.ratings.store.Store.rater_flags`).
"""
from __future__ import annotations

import hashlib
import hmac
import os
import random

from editor.ratings.store import Store

ADMIN_TOKEN_ENV = "MOVIE_ADMIN_TOKEN"


def rater_order(pairs: list[dict], rater_id: str, study_id: str) -> list[dict]:
    """``pairs`` in this rater's own order: a shuffle seeded by sha256(study id, rater id).

    Deterministic, so a rater who reloads the page continues where they were; different per rater, so position
    effects (fatigue, anchoring on the first pairs) average out over raters.  The input order does not matter:
    pairs are sorted by id first.
    """
    seed = int.from_bytes(hashlib.sha256(f"{study_id}\0{rater_id}".encode()).digest()[:8], "big")
    ordered = sorted(pairs, key=lambda p: p["id"])
    random.Random(seed).shuffle(ordered)
    return ordered


def next_pair(store: Store, study_id: str, rater_id: str) -> tuple[dict | None, int, int]:
    """The first pair in the rater's order they have not voted on (``None`` when done), and (done, total).

    ``done`` counts this study's pairs the rater voted on, so progress reads "done of total".
    """
    pairs = store.study_pairs(study_id)
    voted = {v["pair_key"] for v in store.votes(study_id, rater_id=rater_id)}
    done = sum(p["pair_key"] in voted for p in pairs)
    todo = (p for p in rater_order(pairs, rater_id, study_id) if p["pair_key"] not in voted)
    return next(todo, None), done, len(pairs)


def admin_ok(token: str | None) -> bool:
    """True when ``token`` equals ``$MOVIE_ADMIN_TOKEN``; always False when the variable is unset or empty.

    Compared with :func:`hmac.compare_digest` so the time taken does not leak how much of the token matched.
    """
    expected = os.environ.get(ADMIN_TOKEN_ENV, "")
    if not expected or not isinstance(token, str):
        return False
    return hmac.compare_digest(token.encode("utf-8"), expected.encode("utf-8"))
