"""Statistics over preference votes (numpy/scipy only).

A vote is any mapping with ``variant_a``, ``variant_b`` (variant names of the canonical sides) and ``choice`` in
``A``, ``B``, ``tie``, ``both_bad`` (``per_instruction`` also reads ``instruction``); ``Store.votes()`` rows fit.

Conventions used throughout:

* ``tie`` and ``both_bad`` both count as a tie: half a win to each side.  ``both_bad`` is still reported on its own
  in :func:`pairwise_table`.
* Votes comparing a variant with itself carry no preference information and are ignored.
* Bradley-Terry scores are natural-log strengths, ``P(i beats j) = 1 / (1 + exp(s_j - s_i))``, centred to mean 0
  (per connected group of variants if some were never compared, directly or indirectly).  :func:`elo` maps them
  to an Elo-like scale ``1000 + 400 / ln 10 * s``.
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping

import numpy as np
from scipy.sparse.csgraph import connected_components

CHOICES = ("A", "B", "tie", "both_bad")
AUTO_PRIOR = 0.5  # tie pseudo-votes per compared pair used when the plain MLE does not exist (prior=None)


def _score_a(choice: str) -> float:
    """Share of the win that goes to side A."""
    if choice == "A":
        return 1.0
    if choice == "B":
        return 0.0
    if choice in ("tie", "both_bad"):
        return 0.5
    raise ValueError(f"unknown choice {choice!r}; expected one of {CHOICES}")


def wilson_interval(wins: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion ``wins / n`` (``wins`` may be fractional: ties count half).

    ``n == 0`` gives the uninformative ``(0.0, 1.0)``.
    """
    if n < 0 or wins < 0 or wins > n:
        raise ValueError(f"need 0 <= wins <= n, got wins={wins}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = wins / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def pairwise_table(votes: Iterable[Mapping], z: float = 1.96) -> list[dict]:
    """One row per unordered pair of variants (names sorted: ``variant_a < variant_b``), sorted by names.

    Row keys: ``variant_a``, ``variant_b``, ``n`` (votes), ``wins_a``, ``wins_b``, ``ties``, ``both_bad``,
    ``win_rate_a`` = (wins_a + (ties + both_bad) / 2) / n -- both_bad counted as a tie -- and its Wilson interval
    ``ci_low``, ``ci_high`` (95 % for the default ``z``).
    """
    cells: dict[tuple[str, str], dict] = {}
    for v in votes:
        a, b, choice = v["variant_a"], v["variant_b"], v["choice"]
        _score_a(choice)  # validates
        if a == b:
            continue
        first, second = (a, b) if a < b else (b, a)
        row = cells.setdefault((first, second), {"variant_a": first, "variant_b": second, "n": 0, "wins_a": 0,
                                                 "wins_b": 0, "ties": 0, "both_bad": 0})
        row["n"] += 1
        if choice in ("tie", "both_bad"):
            row["ties" if choice == "tie" else "both_bad"] += 1
        else:
            winner = a if choice == "A" else b
            row["wins_a" if winner == first else "wins_b"] += 1
    out = []
    for key in sorted(cells):
        row = cells[key]
        wins = row["wins_a"] + 0.5 * (row["ties"] + row["both_bad"])
        row["win_rate_a"] = wins / row["n"]
        row["ci_low"], row["ci_high"] = wilson_interval(wins, row["n"], z)
        out.append(row)
    return out


def per_instruction(votes: Iterable[Mapping], z: float = 1.96) -> dict[str, list[dict]]:
    """:func:`pairwise_table` per instruction (``vote["instruction"]``, missing -> ``""``), keys sorted."""
    groups: dict[str, list[Mapping]] = defaultdict(list)
    for v in votes:
        groups[v.get("instruction") or ""].append(v)
    return {k: pairwise_table(groups[k], z) for k in sorted(groups)}


# ------------------------------------------------------------------------------------------------------------------
# Bradley-Terry


def _encode(votes: Iterable[Mapping]):
    """Variant names (sorted) and per-vote index arrays ``ia``, ``ib`` and A's share of the win ``sa``."""
    rows = []
    for v in votes:
        sa = _score_a(v["choice"])
        if v["variant_a"] != v["variant_b"]:
            rows.append((v["variant_a"], v["variant_b"], sa))
    names = sorted({r[0] for r in rows} | {r[1] for r in rows})
    index = {n: i for i, n in enumerate(names)}
    ia = np.array([index[r[0]] for r in rows], dtype=np.intp)
    ib = np.array([index[r[1]] for r in rows], dtype=np.intp)
    sa = np.array([r[2] for r in rows], dtype=float)
    return names, ia, ib, sa


def _win_matrix(k: int, ia, ib, sa) -> np.ndarray:
    """``M[i, j]`` = (fractional) wins of i over j."""
    m = np.zeros((k, k))
    np.add.at(m, (ia, ib), sa)
    np.add.at(m, (ib, ia), 1.0 - sa)
    return m


def _mle_exists(wins: np.ndarray) -> bool:
    """Ford's condition: within every connected group, every variant beats (or ties) its way to every other one,
    i.e. the directed win graph is strongly connected inside each weakly connected component."""
    graph = wins > 0
    n_weak = connected_components(graph, directed=True, connection="weak")[0]
    n_strong = connected_components(graph, directed=True, connection="strong")[0]
    return n_weak == n_strong


def _fit_bt(wins: np.ndarray, prior: float | None, iters: int, tol: float) -> np.ndarray:
    """Log-strengths from a win matrix by Hunter's (2004) MM iteration, centred per connected component."""
    k = wins.shape[0]
    if k == 0:
        return np.zeros(0)
    compared = (wins + wins.T) > 0
    if prior is None:
        prior = 0.0 if _mle_exists(wins) else AUTO_PRIOR
    if prior < 0:
        raise ValueError("prior must be >= 0")
    if prior > 0:
        wins = wins + 0.5 * prior * compared
    elif not _mle_exists(wins):
        raise ValueError("the Bradley-Terry MLE does not exist for these votes (a group of variants never won "
                         "against the rest); pass prior > 0 or prior=None")
    n = wins + wins.T
    w = wins.sum(axis=1)
    labels = connected_components(compared, directed=False)[1]
    counts = np.bincount(labels)

    def centre(logp):
        return logp - (np.bincount(labels, weights=logp) / counts)[labels]

    logp = np.zeros(k)
    p = np.ones(k)
    for _ in range(iters):
        denom = (n / (p[:, None] + p[None, :])).sum(axis=1)
        new = centre(np.log(w / denom))
        done = np.max(np.abs(new - logp)) < tol
        logp, p = new, np.exp(new)
        if done:
            break
    return logp


def bradley_terry(votes: Iterable[Mapping], iters: int = 100_000, tol: float = 1e-12,
                  prior: float | None = None) -> dict[str, float]:
    """Bradley-Terry log-strengths (mean 0) by maximum likelihood, ties (and both_bad) as half a win each side.

    ``prior``: number of tie pseudo-votes added to every pair of variants that was compared (a mild shrinkage
    toward equal strength).  ``0`` is the plain MLE (``ValueError`` when it does not exist, e.g. a variant that
    never won or tied); ``None`` (default) is the plain MLE when it exists and :data:`AUTO_PRIOR` otherwise, so
    the scores stay finite on small or one-sided data.
    """
    names, ia, ib, sa = _encode(votes)
    logp = _fit_bt(_win_matrix(len(names), ia, ib, sa), prior, iters, tol)
    return {name: float(s) for name, s in zip(names, logp)}


def elo(scores: Mapping[str, float]) -> dict[str, float]:
    """Bradley-Terry log-strengths on an Elo-like scale: ``1000 + 400 / ln(10) * s``."""
    return {k: 1000.0 + 400.0 / math.log(10.0) * s for k, s in scores.items()}


def bootstrap_bt(votes: Iterable[Mapping], n_boot: int = 200, seed: int = 0, prior: float | None = None,
                 level: float = 0.95, iters: int = 100_000, tol: float = 1e-9) -> dict[str, tuple[float, float, float]]:
    """``{name: (score, low, high)}``: :func:`bradley_terry` on all votes, and percentile intervals (95 % by default)
    from ``n_boot`` resamples of the votes with replacement (seeded, so repeatable).  A variant absent from a
    resample is skipped for that resample; one absent from all gets ``nan`` bounds."""
    votes = list(votes)
    names, ia, ib, sa = _encode(votes)
    k, m = len(names), len(sa)
    point = _fit_bt(_win_matrix(k, ia, ib, sa), prior, iters, 1e-12)
    if k == 0:
        return {}
    rng = np.random.default_rng(seed)
    draws: list[list[float]] = [[] for _ in range(k)]
    for _ in range(n_boot):
        pick = rng.integers(0, m, size=m)
        wins = _win_matrix(k, ia[pick], ib[pick], sa[pick])
        present = np.flatnonzero((wins + wins.T).sum(axis=1) > 0)
        logp = _fit_bt(wins[np.ix_(present, present)], prior, iters, tol)
        for i, s in zip(present, logp):
            draws[i].append(float(s))
    alpha = (1.0 - level) / 2.0
    out = {}
    for i, name in enumerate(names):
        if draws[i]:
            low, high = np.quantile(draws[i], [alpha, 1.0 - alpha])
        else:
            low = high = float("nan")
        out[name] = (float(point[i]), float(low), float(high))
    return out
