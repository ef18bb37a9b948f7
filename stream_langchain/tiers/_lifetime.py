"""Child processes that never outlive the process that owns them.

Two mechanisms, because each covers a case the other misses:

- :func:`die_with_parent` (Linux ``PR_SET_PDEATHSIG``) signals the child the moment its parent
  dies, but it is tied to the *thread* that forked the child: it fires early if that thread
  ends, so it is only safe for children forked from the main thread.
- :func:`watch_parent` runs a daemon thread in the child that polls ``os.getppid()`` and exits
  when the parent is gone (the child is re-parented to init or a subreaper). It holds whatever
  thread forked the child and whatever killed the parent (SIGKILL, a segfault in llama.cpp).

Example:
    >>> import os
    >>> from stream_langchain.tiers._lifetime import parent_alive
    >>> parent_alive(os.getppid())
    True
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

__all__ = ["PARENT_PID_ENV", "die_with_parent", "parent_alive", "watch_parent"]

PARENT_PID_ENV = "STREAM_PARENT_PID"
"""Environment variable through which a spawned server learns which process owns it."""

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:  # pragma: no cover - runs before exec
    """Ask Linux to send ``sig`` to this process when the thread that forked it dies."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig))
    except OSError:
        pass


def parent_alive(parent_pid: int) -> bool:
    """Whether this process is still the child of ``parent_pid``."""
    return os.getppid() == parent_pid


def watch_parent(parent_pid: int, *, interval: float = 0.25, exit_code: int = 0) -> None:
    """Exit this process (at once, with ``os._exit``) as soon as ``parent_pid`` is gone.

    Runs in a daemon thread; returns immediately. If the parent is already gone, exits now.

    Args:
        parent_pid: The owner's pid, read by the owner before it started this process.
        interval: Seconds between checks.
        exit_code: The status to exit with.
    """
    if not parent_alive(parent_pid):
        os._exit(exit_code)

    def run() -> None:
        while parent_alive(parent_pid):
            time.sleep(interval)
        os._exit(exit_code)

    threading.Thread(target=run, name="stream-watch-parent", daemon=True).start()
