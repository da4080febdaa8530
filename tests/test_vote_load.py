"""The vote path under load and under a crash, through the real API with server-side pairs (issue #34): 20 raters
x 50 votes store exactly 1000 rows; a kill -9 of the app during a vote burst loses no acknowledged vote and leaves
a database that passes its integrity check."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from editor.study.store import Store
from tests.conftest import free_port, served
from ui import load_test
from ui.widgets import AppConfig

REPO = Path(__file__).resolve().parents[1]


# 20 x 50 takes about 4 minutes on 2 shared cores (each vote is a /study_pair and a /vote); the default run keeps
# the 20 concurrent raters with 5 votes each, MOVIE_FULL_LOAD=1 runs the full 1000.
VOTES = 50 if os.environ.get("MOVIE_FULL_LOAD") else 5


def test_20_concurrent_raters_store_exactly_one_row_per_vote(editor, store, tmp_path):
    config = AppConfig(short_side=64, samples=(), output_dir=str(tmp_path / "out"))
    with served(editor, store, config) as (url, _):
        report = load_test.run(url, raters=20, votes=VOTES, db_url=store.url)
    print(f"\n20 x {VOTES}: {report}")
    n = 20 * VOTES
    assert report["errors"] == 0, report["error_samples"]
    assert report["rows_expected"] == report["rows_found"] == n == store.count_votes()
    votes = store.votes()
    assert len({v["pair_token"] for v in votes}) == n and len({v["rater_id"] for v in votes}) == 20
    assert len({(v["rater_id"], v["pair_key"]) for v in votes}) == n


def _wait_for(port: int, proc, timeout: float = 180) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError("the app did not start")


def test_kill_9_during_a_vote_burst_loses_no_acknowledged_vote(tiny_family_dir, tmp_path):
    from gradio_client import Client

    db = tmp_path / "ratings.db"
    db_url = f"sqlite:///{db}"
    study_id = load_test.synthetic_study(db_url, 60, "kill9", tmp_path / "clips")
    port = free_port()
    env = {**os.environ, "MOVIE_SECRET": "kill-9-test-secret-0123456789", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "app.py", "--model", str(tiny_family_dir), "--db", str(db),
                             "--port", str(port), "--studies", str(tmp_path / "studies")], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    acked, lock, stop = [], threading.Lock(), threading.Event()
    try:
        _wait_for(port, proc)
        url = f"http://127.0.0.1:{port}"

        def rater(seed):
            rng = np.random.default_rng(seed)
            try:
                client = Client(url, verbose=False, download_files=False)
                token = client.predict(study_id, api_name="/rater")
                while not stop.is_set():
                    pair = client.predict(study_id, token, api_name="/study_pair")[3]
                    if not pair:
                        return
                    voted = client.predict(token, pair, str(rng.choice(["A", "B", "tie"])), 500.0, api_name="/vote")
                    with lock:
                        acked.append(voted["vote_id"])
            except Exception:  # noqa: BLE001 -- the server dies under it: the votes acknowledged so far count
                return

        threads = [threading.Thread(target=rater, args=(k,), daemon=True) for k in range(8)]
        for t in threads:
            t.start()
        t0 = time.time()
        while len(acked) < 40 and time.time() - t0 < 120:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # mid-burst: the raters are still voting
        proc.wait(30)
        stop.set()
        for t in threads:
            t.join(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    assert len(acked) >= 40
    with Store(db_url) as store:
        with store.engine.connect() as c:
            assert c.execute(text("PRAGMA integrity_check")).scalar() == "ok"
        stored = {v["id"] for v in store.votes(study_id)}
        assert set(acked) <= stored, f"{len(set(acked) - stored)} acknowledged votes lost"
        assert len(stored) == len({v["pair_token"] for v in store.votes(study_id)})  # none doubled
    print(f"\nkill -9: {len(acked)} votes acknowledged, {len(stored)} stored, integrity ok")
