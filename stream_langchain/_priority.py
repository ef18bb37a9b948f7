"""A model lock where answers go first: background work (summaries) yields to them.

An in-process model (``llama_cpp.Llama``) runs one generation at a time. Without priorities, a
user's question that arrives while the context fitter writes a summary in the background waits
for that summary. With :class:`ModelLock`:

- work started inside :func:`background` acquires the lock only while no foreground request is
  waiting, and
- a background generation checks :meth:`ModelLock.contended` between tokens and stops with
  :class:`Preempted` when an answer is waiting; the summarizer reschedules it.

Example:
    >>> lock = ModelLock()
    >>> with lock:                        # a foreground answer
    ...     lock.contended
    False
    >>> with background():
    ...     with lock:                    # a summary: acquired because nobody waits
    ...         is_background()
    True
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator
from typing import Any

from stream_langchain.errors import Preempted

__all__ = ["ModelLock", "Preempted", "background", "is_background"]

_BACKGROUND: contextvars.ContextVar[bool] = contextvars.ContextVar("stream_background",
                                                                  default=False)


@contextlib.contextmanager
def background() -> Iterator[None]:
    """Mark model calls made in this context (this thread or task) as background work."""
    token = _BACKGROUND.set(True)
    try:
        yield
    finally:
        _BACKGROUND.reset(token)


def is_background() -> bool:
    """Whether the current context runs background work."""
    return _BACKGROUND.get()


class ModelLock:
    """A non-reentrant lock with two priorities (see the module docstring).

    ``with lock:`` acquires at the caller's priority (:func:`is_background`).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._held = False
        self._waiting = 0  # foreground requests waiting to acquire

    @property
    def contended(self) -> bool:
        """A foreground request is waiting for this lock."""
        return self._waiting > 0

    def acquire(self, *, low: bool | None = None) -> None:
        """Wait for the lock; ``low`` (default: :func:`is_background`) also waits while any
        foreground request waits."""
        low = is_background() if low is None else low
        with self._cond:
            if not low:
                self._waiting += 1
            try:
                while self._held or (low and self._waiting):
                    self._cond.wait()
            finally:
                if not low:
                    self._waiting -= 1
            self._held = True

    def release(self) -> None:
        with self._cond:
            if not self._held:
                raise RuntimeError("release of an unheld ModelLock")
            self._held = False
            self._cond.notify_all()

    def locked(self) -> bool:
        return self._held

    def __enter__(self) -> ModelLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
