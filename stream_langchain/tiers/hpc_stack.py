"""The embedded HPC stack: the whole dual-channel path on one machine, started for you.

:class:`EmbeddedHPC` starts a loopback relay (random secret, free port), a local process
pool standing in for the Globus Compute endpoint (same functions, same plain-data calls),
and llama.cpp's OpenAI-compatible server standing in for vLLM, serving
Qwen2.5-Coder-1.5B-Instruct with llama.cpp's ``chatml-function-calling`` format (bigger, slower
and tool-capable next to the local tier's 0.5B, as a cluster's model would be; about 11
tokens/s on 2 CPU cores: keep ``max_tokens`` small in tests), and
builds a :class:`~stream_langchain.tiers.hpc.ChatHPC` over them. ``close()`` stops all three; it
also runs at interpreter exit and on SIGTERM, and Ctrl-C reaches the child processes too,
so nothing outlives the program.

The worker pool uses the ``fork`` start method (see :meth:`EmbeddedHPC.start`), so scripts
need no ``if __name__ == "__main__":`` guard.

Example:
    >>> from stream_langchain.tiers.hpc_stack import EmbeddedHPC
    >>> with EmbeddedHPC(max_tokens=8) as hpc:  # doctest: +SKIP
    ...     print(hpc.chat_model.invoke("Hello").response_metadata["hpc_mode"])
    stream
"""

from __future__ import annotations

import atexit
import concurrent.futures
import concurrent.futures.process  # noqa: F401 - its exit hook must be registered first
import contextlib
import multiprocessing
import os
import signal
import threading
import weakref
from types import FrameType, TracebackType
from typing import Any

from stream_langchain.tiers._lifetime import watch_parent
from stream_langchain.tiers.hpc import ChatHPC, new_relay_secret
from stream_langchain.tiers.llama_server import LlamaServer
from stream_langchain.tiers.models import DEFAULT_HPC_MODEL, model_path, spec_for_path

__all__ = ["EmbeddedHPC"]

_LIVE: weakref.WeakSet[EmbeddedHPC] = weakref.WeakSet()
_SIGTERM_LOCK = threading.Lock()
_PREVIOUS_SIGTERM: Any = None


def _close_all() -> None:
    for stack in list(_LIVE):
        if stack._owner_pid != os.getpid():
            continue  # a forked child (a pool worker) never owns the parent's stack
        with contextlib.suppress(Exception):
            stack.close()


# Pool workers are forked from the owner: they must not inherit the list of stacks to close.
os.register_at_fork(after_in_child=_LIVE.clear)


# Run before concurrent.futures' own exit hook, which would otherwise wait for a running
# stream_chat task to finish generating (threading's exit hooks run last-registered first,
# and before atexit's).
_register_early_exit = getattr(threading, "_register_atexit", None)
if _register_early_exit is not None:
    _register_early_exit(_close_all)
else:  # pragma: no cover - every CPython >= 3.9 has it
    atexit.register(_close_all)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM into a normal exit so ``finally`` blocks and atexit hooks (which close
    every live stack) run."""
    raise SystemExit(128 + signum)


def _install_sigterm_handler() -> None:
    """Install :func:`_on_sigterm` once, only where nobody else handles SIGTERM."""
    global _PREVIOUS_SIGTERM
    if threading.current_thread() is not threading.main_thread():
        return
    with _SIGTERM_LOCK:
        if _PREVIOUS_SIGTERM is not None:
            return
        current = signal.getsignal(signal.SIGTERM)
        if current is signal.SIG_DFL:
            _PREVIOUS_SIGTERM = current
            signal.signal(signal.SIGTERM, _on_sigterm)


class EmbeddedHPC:
    """Loopback relay + local process pool + llama.cpp server, behind one ChatHPC.

    Args:
        max_tokens: Default answer length for the chat model.
        temperature: Sampling temperature for the chat model.
        model_path: GGUF for the stand-in backend (default: Qwen2.5-Coder-1.5B-Instruct,
            assembled and verified on first use by :mod:`stream_langchain.tiers.models`).
        chat_format: llama.cpp chat format of the backend (default: the model's tool-calling
            format, ``chatml-function-calling`` for the default; for another file, the format
            :func:`~stream_langchain.tiers.models.default_chat_format` picks).
        n_ctx: Backend context window.
        n_threads: Backend CPU threads (``None``: llama.cpp decides).
        workers: Process-pool workers (concurrent HPC requests).
        server: An already running :class:`LlamaServer` to use instead of starting one
            (it is not stopped by :meth:`close`).
        queue_timeout: ChatHPC queue timeout (seconds).
        first_token_timeout: ChatHPC first-token timeout (seconds).
        idle_timeout: ChatHPC idle timeout (seconds).
        **chat_kwargs: More :class:`ChatHPC` fields.

    Example:
        >>> hpc = EmbeddedHPC(max_tokens=16).start()  # doctest: +SKIP
        >>> hpc.chat_model.invoke("Hi").content  # doctest: +SKIP
        >>> hpc.close()  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        max_tokens: int = 256,
        temperature: float | None = 0.7,
        model_path: str | None = None,
        chat_format: str | None = None,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        workers: int = 2,
        server: LlamaServer | None = None,
        # Timeouts
        queue_timeout: float = 60.0,
        first_token_timeout: float = 120.0,
        idle_timeout: float = 60.0,
        **chat_kwargs: Any,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.model_path = model_path
        self.chat_format = chat_format
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.workers = workers
        self.queue_timeout = queue_timeout
        self.first_token_timeout = first_token_timeout
        self.idle_timeout = idle_timeout
        self._chat_kwargs = chat_kwargs
        self._given_server = server
        self._server: LlamaServer | None = None
        self._relay: Any = None
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        self._chat: ChatHPC | None = None
        self._lock = threading.RLock()
        self._owner_pid = os.getpid()

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> EmbeddedHPC:
        """Start the relay, the backend and the worker pool (idempotent).

        Returns:
            ``self``.

        Raises:
            stream_langchain.tiers.llama_server.LlamaServerError: If the backend cannot start.
            ImportError: If ``relay`` or llama.cpp's server are not installed.
        """
        with self._lock:
            if self._chat is not None:
                return self
            import relay

            self._owner_pid = os.getpid()
            _LIVE.add(self)
            _install_sigterm_handler()
            try:
                self._executor = _start_workers(self.workers)
                secret = new_relay_secret()
                self._relay = relay.run_in_thread(secret=secret, host="127.0.0.1", port=0)
                server = self._start_backend()
                self._chat = ChatHPC(**self._chat_config(server, secret))
            except BaseException:
                self._close_locked()
                raise
            return self

    def _start_backend(self) -> LlamaServer:
        """The given running server, or a new one over the backend model."""
        if self._given_server is not None:
            if not self._given_server.running:
                raise RuntimeError("the LlamaServer passed as server= is not running")
            return self._given_server
        path, fmt = self._backend_model()
        self._server = LlamaServer(
            path, chat_format=fmt, n_ctx=self.n_ctx, n_threads=self.n_threads
        ).start()
        return self._server

    def _chat_config(self, server: LlamaServer, secret: str) -> dict[str, Any]:
        """ChatHPC's arguments over the started parts (``chat_kwargs`` last)."""
        kwargs: dict[str, Any] = {
            "executor": self._executor,
            "relay_url": self._relay.url,
            "relay_secret": secret,
            "backend_url": server.base_url,
            "model": server.model_alias,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "queue_timeout": self.queue_timeout,
            "first_token_timeout": self.first_token_timeout,
            "idle_timeout": self.idle_timeout,
        }
        # Measured (python -m benchmarks.models --tools-only; see
        # tests/stream_langchain/tiers/test_hpc_standard.py): with llama.cpp's
        # chatml-function-calling parser the 1.5B calls tools for only about half of the
        # tool questions with tool_choice="auto", and "any"/"required" are refused; so
        # the profile says no (StreamLLM.metadata reads it). A real vLLM tier sets its own.
        kwargs["profile"] = {"tool_calling": False, "structured_output": False,
                             "max_input_tokens": self.n_ctx, "image_inputs": False}
        kwargs.update(self._chat_kwargs)
        return kwargs

    def _backend_model(self) -> tuple[str, str | None]:
        """The backend's GGUF and chat format (assembling the default model if needed)."""
        if self.model_path is not None:
            spec = spec_for_path(self.model_path)
            fmt = self.chat_format or (spec.tool_chat_format if spec is not None else None)
            return self.model_path, fmt  # None: LlamaServer picks the file's format
        spec = DEFAULT_HPC_MODEL
        return model_path(spec), self.chat_format or spec.tool_chat_format or spec.chat_format

    def close(self) -> None:
        """Stop everything this stack started (idempotent, safe at exit)."""
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        self._chat = None
        relay_handle, self._relay = self._relay, None
        server, self._server = self._server, None
        executor, self._executor = self._executor, None
        # Relay first: running producers see the channel close and stop generating.
        if relay_handle is not None:
            with contextlib.suppress(Exception):
                relay_handle.stop()
        if server is not None:
            server.stop()
        if executor is not None:
            _stop_pool(executor)
        _LIVE.discard(self)

    def __enter__(self) -> EmbeddedHPC:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- parts ------------------------------------------------------------------------------

    @property
    def chat_model(self) -> ChatHPC:
        """The HPC tier's chat model (valid between :meth:`start` and :meth:`close`)."""
        if self._chat is None:
            raise RuntimeError("EmbeddedHPC is not started; call start() first")
        return self._chat

    @property
    def relay_url(self) -> str:
        """The loopback relay's URL."""
        if self._relay is None:
            raise RuntimeError("EmbeddedHPC is not started; call start() first")
        return str(self._relay.url)

    @property
    def backend_url(self) -> str:
        """The stand-in backend's OpenAI-compatible base URL."""
        server = self._server or self._given_server
        if self._chat is None or server is None:
            raise RuntimeError("EmbeddedHPC is not started; call start() first")
        return server.base_url

    @property
    def executor(self) -> concurrent.futures.Executor:
        """The local process pool that stands in for the Globus Compute endpoint."""
        if self._executor is None:
            raise RuntimeError("EmbeddedHPC is not started; call start() first")
        return self._executor

    def child_pids(self) -> list[int]:
        """Process ids this stack started (backend server and pool workers)."""
        pids = []
        if self._server is not None and self._server.pid is not None:
            pids.append(self._server.pid)
        if self._executor is not None:
            pids.extend(p.pid for p in _pool_processes(self._executor) if p.pid is not None)
        return pids

    def __repr__(self) -> str:
        state = "running" if self._chat is not None else "stopped"
        return f"EmbeddedHPC({state}, workers={self.workers}, max_tokens={self.max_tokens})"


def _init_worker(owner_pid: int) -> None:
    """Pool worker start-up: leave Ctrl-C to the owner, and die with it however it dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch_parent(owner_pid)


def _pool_processes(pool: concurrent.futures.ProcessPoolExecutor) -> list[Any]:
    # ProcessPoolExecutor keeps its workers in a private dict; read-only use, for cleanup.
    return list((getattr(pool, "_processes", None) or {}).values())


def _stop_pool(pool: concurrent.futures.ProcessPoolExecutor, grace: float = 5.0) -> None:
    """Shut the pool down; workers still busy after ``grace`` seconds are terminated."""
    procs = _pool_processes(pool)
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        p.join(grace)
    for p in procs:
        if p.is_alive():
            p.terminate()
            p.join(grace)
        if p.is_alive():
            p.kill()
            p.join()
    with contextlib.suppress(Exception):
        pool.shutdown(wait=True)


def _start_workers(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    """The worker pool standing in for the endpoint, warmed and checked.

    Workers come first, forked before the stack starts any thread of its own. fork, not
    spawn: spawn re-imports the user's ``__main__`` in every worker, which breaks scripts
    without an ``if __name__ == "__main__"`` guard. The workers only run hpc_functions (httpx
    + relay). They ignore SIGINT: Ctrl-C is handled by the stack, and ``close()`` then stops
    them; and they exit by themselves if this process dies without closing them (SIGKILL, a
    crash).
    """
    from hpc_functions import ping

    executor = concurrent.futures.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_init_worker,
        initargs=(os.getpid(),),
    )
    try:
        for f in [executor.submit(ping) for _ in range(workers)]:
            status = f.result(timeout=120)
            if not status["ok"]:
                raise ImportError(f"HPC workers cannot import {status['missing']}")
    except BaseException:
        _stop_pool(executor)
        raise
    return executor
