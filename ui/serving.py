"""Serving policy: one engine worker with a bounded wait list, and the bridge from plain handlers to Gradio.

Edits (edit, preview, compare, rendering an A/B pair) share one :class:`EditGate`: one runs at a time, at most
``max_waiting`` more wait for it, and any further request is refused at once with :data:`BUSY` instead of queueing
without end. Votes and results never pass through the gate (their events have their own concurrency ids), so they
never wait behind an edit. The pages wire their events with the options here (:func:`engine_event`,
:data:`VOTE_EVENT`, :data:`RESULTS_EVENT`, :data:`UI_EVENT`).

Every handler runs behind :func:`gradio_handler`, which bounds the fields of every request before any work starts
(:func:`check_fields`: text length, finite numbers of sane magnitude, JSON size) and turns a refusal into a one-line
message for the user and one line in the log; a traceback is logged only for a real bug ("internal error").
"""
from __future__ import annotations

import functools
import inspect
import json
import logging
import math
import numbers
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
MAX_FIELD_CHARS = 2000        # any text field (an instruction, a token, a path, a study id)
MAX_FIELD_NUMBER = 2**53      # any number field: beyond this no setting makes sense, and floats lose integers
MAX_FIELD_JSON = 64 * 2**10   # any structured field, as JSON


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


def check_fields(args, kwargs, names: list[str] | None = None) -> None:
    """Refuse, with a :class:`UserError` naming the problem, a request field that no handler could want: text over
    :data:`MAX_FIELD_CHARS` characters, a number that is NaN, infinite or beyond :data:`MAX_FIELD_NUMBER` in size,
    a structured value over :data:`MAX_FIELD_JSON` bytes as JSON.  Each handler still checks its own ranges."""
    names = list(names or [])
    labels = [names[k] if k < len(names) else f"field {k + 1}" for k in range(len(args))] + list(kwargs)
    for k, value in zip(labels, [*args, *kwargs.values()]):
        if isinstance(value, str):
            if len(value) > MAX_FIELD_CHARS:
                raise UserError(f"{k} is {len(value)} characters long; the limit is {MAX_FIELD_CHARS}.")
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, numbers.Real):
            if isinstance(value, float) and not math.isfinite(value):
                raise UserError(f"{k} is not a finite number ({value}).")
            if abs(value) > MAX_FIELD_NUMBER:
                raise UserError(f"{k} is out of range ({value:.3g}).")
        elif isinstance(value, (dict, list, tuple)):
            try:
                size = len(json.dumps(value, allow_nan=False, default=str))
            except (TypeError, ValueError):
                raise UserError(f"{k} holds values that are not plain numbers or text.") from None
            if size > MAX_FIELD_JSON:
                raise UserError(f"{k} is {size} bytes as JSON; the limit is {MAX_FIELD_JSON}.")


def gradio_handler(fn: Callable, what: str = "request") -> Callable:
    """``fn`` for a Gradio event: the request's fields are bounded first (:func:`check_fields`); a
    :class:`UserError` becomes ``gr.Error`` with its message and one log line; anything else is logged with its
    traceback and shown as an internal error (the user never sees a traceback)."""

    try:
        names = [p for p in inspect.signature(fn).parameters]
    except (TypeError, ValueError):
        names = []

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            check_fields(args, kwargs, names)
            return fn(*args, **kwargs)
        except UserError as e:
            log.info("%s refused: %s", what, str(e).splitlines()[0] if str(e) else type(e).__name__)
            raise gr.Error(str(e), print_exception=False) from None
        except gr.Error as e:
            log.info("%s refused: %s", what, e.message)
            e.print_exception = False
            raise
        except Exception as e:
            log.exception("%s failed", what)
            raise gr.Error(f"The {what} failed with an internal error; the server log has the details.",
                           print_exception=False) from e

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
