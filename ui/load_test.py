"""Load test of the vote path: many concurrent raters voting through the running app's API, as a browser does.

    python -m ui.load_test --url http://127.0.0.1:7860 --raters 20 --votes 50 [--db URL] [--study ID] [--json out.json]

Every rater is a thread with its own ``gradio_client.Client``: it asks ``/rater`` for a token bound to the study,
then ``--votes`` times asks ``/study_pair`` for its next pair (a pair token and two anonymous videos) and votes on
it with ``/vote`` (the rater token, the pair token, a click, a time to decide), all raters starting together.
Without ``--study`` the script first records a synthetic study of ``--votes`` pairs in the ratings database
(``--db``, default ``$DATABASE_URL`` or ``data/ratings.db`` -- the app's own default), its videos one tiny clip
written to a temporary folder: run it on the app's machine.  Afterwards it counts the study's rows of those raters:
with no vote lost or doubled the count is exactly raters x votes. It prints and writes a JSON report (rows
expected and found, errors, votes/s, latency p50/p95 of the votes) and exits non-zero when rows are missing or
any vote failed.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from editor.study.store import Store, default_url, file_sha256
from ui.rate import SHOWN

VARIANT_PAIR = ("teacher", "teacher+clockwork-identity")  # registered in every family


def synthetic_study(db_url: str, pairs: int, run: str, folder: str | Path | None = None) -> str:
    """Record a study of ``pairs`` pairs whose videos are one tiny clip; return its id."""
    from editor.video_io import write_clip

    folder = Path(folder or tempfile.mkdtemp(prefix="movie-load-test-"))
    folder.mkdir(parents=True, exist_ok=True)
    t, y, x = np.mgrid[0:4, 0:32, 0:32]
    frames = np.stack([(x * 8 + t * 16) % 256, (y * 8) % 256, np.full_like(x, 128)], -1).astype(np.uint8)
    sides = [write_clip(frames, 8, folder / f"{side}.mp4") for side in "ab"]
    clip_hash = file_sha256(sides[0])
    with Store(db_url) as store:
        study_id = store.create_study(f"load test {run}", {"load_test": run})
        store.add_study_pairs(study_id, [dict(
            clip_path=sides[0], clip_hash=clip_hash, instruction=f"load test {k}: make it black and white",
            variant_a=VARIANT_PAIR[0], variant_b=VARIANT_PAIR[1], params={"steps": 4, "seed": k},
            rendered_a=sides[0], rendered_b=sides[1]) for k in range(pairs)])
    return study_id


def rater_votes(url: str, study_id: str, votes: int, seed: int, start: threading.Barrier) -> dict:
    """One rater: connect, get a token, wait for the others, then ``votes`` times fetch the next pair and vote on
    it; returns the rater id, vote latencies (s) and error messages."""
    from gradio_client import Client

    rng = np.random.default_rng(seed)
    latencies, errors, rater_id = [], [], None
    try:
        client = Client(url, verbose=False, download_files=False)
        token = client.predict(study_id, api_name="/rater")
        rater_id = token.split(".", 1)[0]
    except Exception as e:  # a rater that cannot connect loses all its votes
        start.wait()
        return {"rater_id": None, "latencies": [], "errors": [f"connect: {e}"] * votes}
    start.wait()
    for _ in range(votes):
        try:
            pair_token = client.predict(study_id, token, api_name="/study_pair")[3]
            t0 = time.perf_counter()
            client.predict(token, pair_token, str(rng.choice(SHOWN)), float(rng.integers(300, 5000)),
                           api_name="/vote")
            latencies.append(time.perf_counter() - t0)
        except Exception as e:  # recorded, the run goes on
            errors.append(f"{type(e).__name__}: {e}")
    return {"rater_id": rater_id, "latencies": latencies, "errors": errors}


def _run_raters(url: str, raters: int, votes: int, study_id: str, seed: int) -> tuple[list[dict], float]:
    """All raters at once (threads); returns their results and the wall time from the common start."""
    start = threading.Barrier(raters + 1)
    results: list[dict] = [{} for _ in range(raters)]

    def work(i: int) -> None:
        results[i] = rater_votes(url, study_id, votes, seed + i, start)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(raters)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return results, time.perf_counter() - t0


def count_rows(db_url: str, study_id: str, rater_ids: list[str]) -> int:
    """Rows of these raters in the study."""
    with Store(db_url) as store:
        return sum(1 for v in store.votes(study_id) if v["rater_id"] in set(rater_ids))


def run(url: str, raters: int = 20, votes: int = 50, db_url: str | None = None, seed: int = 0,
        study_id: str | None = None) -> dict:
    """Run the load test; returns the report (see the module docstring)."""
    run_id = uuid.uuid4().hex[:8]
    db_url = db_url or default_url()
    study_id = study_id or synthetic_study(db_url, votes, run_id)
    results, seconds = _run_raters(url, raters, votes, study_id, seed)
    latencies = np.array([x for r in results for x in r["latencies"]])
    errors = [e for r in results for e in r["errors"]]
    found = count_rows(db_url, study_id, [r["rater_id"] for r in results if r["rater_id"]])
    pct = (lambda q: round(1000 * float(np.percentile(latencies, q)), 1)) if len(latencies) else (lambda q: None)
    return {"url": url, "run": run_id, "study": study_id, "raters": raters, "votes_per_rater": votes,
            "rows_expected": raters * votes, "rows_found": found, "ok_votes": int(len(latencies)),
            "errors": len(errors), "error_samples": errors[:5], "seconds": round(seconds, 2),
            "votes_per_s": round(len(latencies) / seconds, 1) if seconds else None,
            "latency_ms": {"p50": pct(50), "p95": pct(95), "max": pct(100)}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ui.load_test", description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="the running app, e.g. http://127.0.0.1:7860")
    p.add_argument("--raters", type=int, default=20, help="concurrent raters (default 20)")
    p.add_argument("--votes", type=int, default=50, help="votes per rater (default 50)")
    p.add_argument("--db", default=None, help="the app's ratings database URL (default: $DATABASE_URL or "
                                              "data/ratings.db)")
    p.add_argument("--study", default=None, help="vote in this study (it needs at least --votes pairs); default: "
                                                 "a synthetic study recorded for the run")
    p.add_argument("--json", default="runs/load_test.json", help="where to write the report")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run, print and write the report; exit status 0 only with every row found and no error."""
    args = parse_args(argv)
    report = run(args.url, args.raters, args.votes, args.db, args.seed, args.study)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    return 0 if report["rows_found"] == report["rows_expected"] and not report["errors"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
