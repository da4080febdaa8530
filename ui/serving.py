"""Serving policy: one engine worker with a bounded wait list, and the bridge from plain handlers to Gradio.

Edits (edit, preview, compare, rendering an A/B pair) share one :class:`EditGate`: one runs at a time, at most
``max_waiting`` more wait for it, and any further request is refused at once with :data:`BUSY` instead of queueing
without end. Votes and results never pass through the gate (their events have their own concurrency ids), so they
never wait behind an edit. The pages wire their events with the options here (:func:`engine_event`,
:data:`VOTE_EVENT`, :data:`RESULTS_EVENT`, :data:`UI_EVENT`).
"""
from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from contextlib import contextmanager
from typing import TYPE_CHECKING

import gradio as gr

from ui.common import UserError

if TYPE_CHECKING:
    from ui.widgets import App

log = logging.getLogger(__name__)

BUSY = "The editor is busy: {waiting} edits are already waiting. Please try again in a minute."
EDIT_CONCURRENCY = "edit"      # Gradio concurrency id of every event that runs the engine
VOTE_CONCURRENCY = "vote"      # votes: their own workers, never behind an edit
RESULTS_CONCURRENCY = "results"
VOTE_LIMIT = 16  # votes handled at once (short database writes)


class EditGate:
    """One engine worker and a bounded wait list (a lock plus a counter; one gate per app, passed in)."""

    def __init__(self, max_waiting: int = 4):
        if max_waiting < 0:
            raise ValueError(f"max_waiting must be >= 0, got {max_waiting}")
        self.max_waiting = max_waiting
        self._worker = threading.Lock()
        self._count = threading.Lock()
        self.waiting = 0

    @property
    def gradio_limit(self) -> int:
        """Gradio's concurrency limit for the edit events: the worker, the waiters and one slot to refuse from."""
        return self.max_waiting + 2

    def _enter(self) -> None:
        with self._count:
            busy = self._worker.locked()
            if busy and self.waiting >= self.max_waiting:
                raise UserError(BUSY.format(waiting=self.waiting))
            self.waiting += 1

    @contextmanager
    def slot(self):
        """Hold the engine for one edit; raises :class:`UserError` (:data:`BUSY`) when the wait list is full."""
        self._enter()
        try:
            self._worker.acquire()
        finally:
            with self._count:
                self.waiting -= 1
        try:
            yield
        finally:
            self._worker.release()


def gradio_handler(fn: Callable, what: str = "request") -> Callable:
    """``fn`` for a Gradio event: :class:`UserError` becomes ``gr.Error`` with its message; anything else is
    logged and shown as an internal error (the user never sees a traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            raise gr.Error(str(e)) from e
        except gr.Error:
            raise
        except Exception as e:
            log.exception("%s failed", what)
            raise gr.Error(f"The {what} failed with an internal error; the server log has the details.") from e

    return wrapper


def gated(gate: EditGate, fn: Callable) -> Callable:
    """``fn`` run inside ``gate.slot()``: one engine user at a time, the overflow refused with :data:`BUSY`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with gate.slot():
            return fn(*args, **kwargs)

    return wrapper


def progress_sink(progress: gr.Progress, unit: str = "frames") -> Callable[[float, float, str], None]:
    """A ``(done, total, desc)`` callback for :class:`ui.common.ProgressReport`, feeding Gradio's bar."""
    return lambda done, total, desc: progress((done, total), desc=desc, unit=unit)


def engine_fn(app: App, fn, what: str):
    """An engine handler for Gradio: through the edit gate, with user errors shown as such."""
    return gradio_handler(gated(app.gate, fn), what)


def engine_event(app: App) -> dict:
    """Event options of every engine event: one shared concurrency id, bounded by the gate."""
    return {"concurrency_id": EDIT_CONCURRENCY, "concurrency_limit": app.gate.gradio_limit}


VOTE_EVENT = {"concurrency_id": VOTE_CONCURRENCY, "concurrency_limit": VOTE_LIMIT}
RESULTS_EVENT = {"concurrency_id": RESULTS_CONCURRENCY, "concurrency_limit": 4}
UI_EVENT = {"api_visibility": "private", "queue": False}
