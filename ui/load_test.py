"""Load test of the vote path: many concurrent raters voting through the running app's ``/vote`` endpoint.

    python -m ui.load_test --url http://127.0.0.1:7860 --raters 20 --votes 50 [--db URL] [--json out.json]

Every rater is a thread with its own ``gradio_client.Client`` and a fresh anonymous rater id; each votes
``--votes`` times on distinct synthetic pairs (a made-up clip hash, a seed per vote, sides shown at random),
all raters starting together. Afterwards the script counts the rows of those raters in the ratings database
(``--db``, default ``$DATABASE_URL`` or ``data/ratings.db`` -- the app's own default): with no vote lost or
doubled the count is exactly raters x votes. It prints and writes a JSON report (rows expected and found,
errors, votes/s, latency p50/p95) and exits non-zero when rows are missing or any vote failed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from editor.study.store import Store, default_url
from ui.rate import SHOWN

VARIANT_PAIR = ("teacher", "teacher+clockwork-identity")  # registered in every family


def synthetic_pair(run: str, k: int, rng: np.random.Generator) -> dict:
    """The ``k``-th pair of a load-test run: same made-up clip for all, one seed per pair, sides at random."""
    return {"clip_hash": hashlib.sha256(f"load-test-{run}".encode()).hexdigest(),
            "instruction": "load test: make it black and white", "variant_a": VARIANT_PAIR[0],
            "variant_b": VARIANT_PAIR[1], "params_a": {"steps": 4}, "params_b": {"steps": 4, "clock": 2},
            "seed_a": k, "seed_b": k, "shown_left": "A" if rng.random() < 0.5 else "B"}


def rater_votes(url: str, rater_id: str, votes: int, run: str, seed: int, start: threading.Barrier) -> dict:
    """One rater: connect, wait for the others, cast ``votes`` votes; returns latencies (s) and error messages."""
    from gradio_client import Client

    rng = np.random.default_rng(seed)
    latencies, errors = [], []
    try:
        client = Client(url, verbose=False)
    except Exception as e:  # a rater that cannot connect loses all its votes
        start.wait()
        return {"latencies": [], "errors": [f"connect: {e}"] * votes}
    start.wait()
    for k in range(votes):
        t0 = time.perf_counter()
        try:
            client.predict(rater_id, synthetic_pair(run, k, rng), str(rng.choice(SHOWN)),
                           float(rng.integers(300, 5000)), api_name="/vote")
            latencies.append(time.perf_counter() - t0)
        except Exception as e:  # recorded, the run goes on
            errors.append(f"{type(e).__name__}: {e}")
    return {"latencies": latencies, "errors": errors}


def _run_raters(url: str, ids: list[str], votes: int, run: str, seed: int) -> tuple[list[dict], float]:
    """All raters at once (threads); returns their results and the wall time from the common start."""
    start = threading.Barrier(len(ids) + 1)
    results: list[dict] = [{} for _ in ids]

    def work(i: int) -> None:
        results[i] = rater_votes(url, ids[i], votes, run, seed + i, start)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(ids))]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return results, time.perf_counter() - t0


def count_rows(db_url: str, rater_ids: list[str]) -> int:
    """Rows of these raters in the ratings database."""
    with Store(db_url) as store:
        return sum(store.count_votes(rater_id=r) for r in rater_ids)


def run(url: str, raters: int = 20, votes: int = 50, db_url: str | None = None, seed: int = 0) -> dict:
    """Run the load test; returns the report (see the module docstring)."""
    run_id = uuid.uuid4().hex[:8]
    ids = [f"load-{run_id}-{i:03d}" for i in range(raters)]
    results, seconds = _run_raters(url, ids, votes, run_id, seed)
    latencies = np.array([x for r in results for x in r["latencies"]])
    errors = [e for r in results for e in r["errors"]]
    found = count_rows(db_url or default_url(), ids)
    pct = (lambda q: round(1000 * float(np.percentile(latencies, q)), 1)) if len(latencies) else (lambda q: None)
    return {"url": url, "run": run_id, "raters": raters, "votes_per_rater": votes, "rows_expected": raters * votes,
            "rows_found": found, "ok_votes": int(len(latencies)), "errors": len(errors), "error_samples": errors[:5],
            "seconds": round(seconds, 2), "votes_per_s": round(len(latencies) / seconds, 1) if seconds else None,
            "latency_ms": {"p50": pct(50), "p95": pct(95), "max": pct(100)}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ui.load_test", description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="the running app, e.g. http://127.0.0.1:7860")
    p.add_argument("--raters", type=int, default=20, help="concurrent raters (default 20)")
    p.add_argument("--votes", type=int, default=50, help="votes per rater (default 50)")
    p.add_argument("--db", default=None, help="the app's ratings database URL (default: $DATABASE_URL or "
                                              "data/ratings.db)")
    p.add_argument("--json", default="runs/load_test.json", help="where to write the report")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run, print and write the report; exit status 0 only with every row found and no error."""
    args = parse_args(argv)
    report = run(args.url, args.raters, args.votes, args.db, args.seed)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    return 0 if report["rows_found"] == report["rows_expected"] and not report["errors"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
