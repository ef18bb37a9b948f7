"""The HPC stream, sans I/O: one request's relay payloads, task result and clock, as chunks.

:class:`_RelayStream` is the state of one streamed HPC request, written the way the relay's
own :class:`relay._common.ConsumerCore` and websockets' ``protocol.py`` are: it does no I/O
and reads no clock. It is fed what happened (a payload from the relay, the task's result, the
relay's error or end, the time) and answers with the chunks to yield, or raises the
:class:`~stream_langchain.tiers.hpc_errors.HPCError` that ends the request. Its phases and
their timers:

- ``queue``: from submit until the node's ``start`` payload (``HPCTimeouts.queue``);
- ``first``: from ``start`` until the first token (``HPCTimeouts.first_token``);
- ``idle``: between events once tokens flow (``HPCTimeouts.idle``).

Every event restarts the current phase's timer; :meth:`_RelayStream.deadline` says when the
driver must call :meth:`_RelayStream.tick`. :func:`drive` is the small asyncio driver that
races the relay's next payload against the task's completion and the deadline.

The payload kinds and summary keys come from :mod:`hpc_functions.protocol`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal, NoReturn

from langchain_core.messages import AIMessageChunk
from langchain_core.messages.tool import ToolCallChunk, tool_call_chunk
from langchain_core.outputs import ChatGenerationChunk

import stream_langchain.errors as errors
from hpc_functions import protocol
from stream_langchain._messages import final_chunk
from stream_langchain.errors import HPCError, describe

__all__ = ["TIMEOUT_KEYWORDS", "HPCTimeouts", "batch_chunks", "drive", "is_unreachable"]


@dataclass(frozen=True)
class HPCTimeouts:
    """Every timeout of the HPC tier, in seconds (each positive, none unbounded).

    ``ChatHPC(timeouts=HPCTimeouts(...))``, or the old keywords (``queue_timeout=...``), which
    map onto these fields.

    Example:
        >>> HPCTimeouts(queue=30).queue, HPCTimeouts().idle
        (30, 60.0)
    """

    queue: float = 300.0
    """From submit until the task starts and reaches the relay (``queue_timeout``)."""
    first_token: float = 120.0
    """From task start until the first token (``first_token_timeout``)."""
    idle: float = 60.0
    """Longest silence between two frames once tokens flow (``idle_timeout``)."""
    relay_open: float = 10.0
    """Connecting to the relay, consumer here and producer on the node (``relay_open_timeout``)."""
    batch: float = 900.0
    """A whole batch-mode answer, from submit (``batch_timeout``)."""
    backend: float = 60.0
    """On the node: connecting to the backend and waiting between its bytes
    (``backend_timeout``)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{f.name}_timeout must be a number of seconds > 0: {value!r}")


#: The ChatHPC keyword of each :class:`HPCTimeouts` field (its public name before it).
TIMEOUT_KEYWORDS: dict[str, str] = {
    "queue_timeout": "queue",
    "first_token_timeout": "first_token",
    "idle_timeout": "idle",
    "relay_open_timeout": "relay_open",
    "batch_timeout": "batch",
    "backend_timeout": "backend",
}


# -- payload -> chunk conversion (shared by the stream and batch paths) ----------------------


def _tool_chunks(tool_calls: Sequence[dict[str, Any]]) -> list[ToolCallChunk]:
    out = []
    for i, tc in enumerate(tool_calls):
        fn = tc.get("function") or {}
        out.append(
            tool_call_chunk(
                name=fn.get("name"), args=fn.get("arguments"), id=tc.get("id"),
                index=tc.get("index", i),
            )
        )
    return out


def _delta_chunk(payload: dict[str, Any]) -> ChatGenerationChunk | None:
    content = payload.get("content") or ""
    tool_calls = payload.get("tool_calls") or []
    if not content and not tool_calls:
        return None
    msg = AIMessageChunk(content=content, tool_call_chunks=_tool_chunks(tool_calls))
    return ChatGenerationChunk(message=msg)


def _usage(usage: dict[str, Any] | None, counted: int) -> dict[str, int]:
    """The backend's usage as LangChain counts it; chunks counted when it gave no output count."""
    usage = usage or {}
    return {"input_tokens": int(usage.get("prompt_tokens") or 0),
            "output_tokens": int(usage.get("completion_tokens") or counted)}


def _final_chunk(
    usage: dict[str, int], metadata: dict[str, Any], finish_reason: str | None
) -> ChatGenerationChunk:
    meta = dict(metadata)
    if finish_reason:
        meta["finish_reason"] = finish_reason
    chunk = final_chunk(usage=usage, response_metadata=meta)
    if finish_reason:
        chunk.generation_info = {"finish_reason": finish_reason}
    return chunk


def batch_chunks(
    completion: dict[str, Any], metadata: dict[str, Any]
) -> list[ChatGenerationChunk]:
    """The chunks of a whole (batch-mode) OpenAI completion: the answer, then usage.

    Args:
        completion: The OpenAI chat-completions response.
        metadata: ``response_metadata`` of the final chunk (``hpc_mode``, ...).

    Returns:
        The answer's chunk (if any) and the final chunk with usage.

    Raises:
        HPCRemoteError: The completion has no choices.
    """
    choices = completion.get("choices") or []
    if not choices:
        raise errors.HPCRemoteError(f"batch completion has no choices: {str(completion)[:200]}")
    message = choices[0].get("message") or {}
    first = _delta_chunk(
        {"content": message.get("content") or "", "tool_calls": message.get("tool_calls") or []}
    )
    chunks = [] if first is None else [first]
    meta = {"model_name": completion.get("model"), **metadata}
    usage = _usage(completion.get("usage"), len(chunks))
    chunks.append(_final_chunk(usage, meta, choices[0].get("finish_reason")))
    return chunks


def is_unreachable(exc: BaseException) -> bool:
    """Whether a consumer-open failure means 'relay not reachable' (-> next relay or batch)."""
    import relay

    if isinstance(exc, relay.AuthRejected):
        return False
    return isinstance(
        exc, OSError | relay.RelayUnreachable | relay.ConnectTimeout | relay.RelayRefused
    )


def _relay_lost(exc: BaseException) -> bool:
    """Whether a relay error before the first token means the relay went away."""
    import relay

    return is_unreachable(exc) or isinstance(exc, relay.ChannelClosed | relay.TruncatedStream)


# -- the state machine -----------------------------------------------------------------------

Phase = Literal["queue", "first", "idle", "done"]


class _RelayStream:
    """One streamed HPC request's state, without I/O (see the module docs).

    Args:
        timeouts: The phase timeouts.
        model: The model name to report when the node names none.
        now: The submit time (monotonic seconds; every ``now`` below is on the same clock).
        failover: Whether a relay lost before the first token raises
            :class:`~stream_langchain.errors.RelayFailed` (the pool moves to the next relay)
            instead of :class:`HPCError`.
    """

    def __init__(
        self, timeouts: HPCTimeouts, *, model: str, now: float, failover: bool = False
    ) -> None:
        self.timeouts = timeouts
        self.model = model
        self.failover = failover
        self.phase: Phase = "queue"
        self.tokens = 0
        self.submitted = now
        self.started_at: float | None = None
        self._since = now
        self._model_name: str | None = None
        self._finish_reason: str | None = None
        self._usage: dict[str, Any] | None = None
        self._backend_ttft: float | None = None

    @property
    def done(self) -> bool:
        """Whether the request ended (the final chunk was emitted)."""
        return self.phase == "done"

    def _timeout(self) -> float:
        t = self.timeouts
        return {"queue": t.queue, "first": t.first_token}.get(self.phase, t.idle)

    def deadline(self) -> float:
        """When, without another event, :meth:`tick` raises the current phase's timeout."""
        return self._since + self._timeout()

    def tick(self, now: float) -> None:
        """The clock moved: raise the phase's timeout error once its deadline has passed.

        Raises:
            HPCQueueTimeout: No ``start`` payload within ``queue`` seconds.
            HPCFirstTokenTimeout: Started, but no token within ``first_token`` seconds.
            HPCIdleTimeout: No event within ``idle`` seconds once tokens flow.
        """
        if self.done or now < self.deadline():
            return
        timeout, n = self._timeout(), self.tokens
        if self.phase == "queue":
            raise errors.HPCQueueTimeout(
                f"HPC task did not start within queue_timeout={timeout:g}s", tokens=n)
        if self.phase == "first":
            raise errors.HPCFirstTokenTimeout(
                f"HPC task started but sent no token within first_token_timeout={timeout:g}s",
                tokens=n)
        raise errors.HPCIdleTimeout(
            f"HPC stream idle for more than idle_timeout={timeout:g}s after {n} tokens", tokens=n)

    def resume(self, now: float) -> None:
        """The driver waits again after handing chunks to its caller: restart the timer."""
        self._since = max(self._since, now)

    def receive_payload(self, payload: Any, now: float) -> list[ChatGenerationChunk]:
        """One verified payload from the node: the chunks it makes (a token, or none).

        Raises:
            HPCError: A payload of an unknown kind.
        """
        self._since = now
        kind = payload.get("type") if isinstance(payload, dict) else None
        if kind == protocol.START:
            self.started_at, self.phase = now, "first"
        elif kind == protocol.DELTA:
            self._model_name = self._model_name or payload.get("model")
            self._finish_reason = payload.get("finish_reason") or self._finish_reason
            delta = _delta_chunk(payload)
            if delta is not None:
                self.tokens += 1
                self.phase = "idle"
                return [delta]
        elif kind == protocol.USAGE:
            self._usage = payload.get("usage")
            self._backend_ttft = payload.get("backend_ttft_s")
        else:
            raise HPCError(f"unexpected payload from the HPC node: {kind!r}", tokens=self.tokens)
        return []

    def receive_task_result(
        self, result: Any, now: float, error: BaseException | None = None
    ) -> list[ChatGenerationChunk]:
        """The task finished (``result`` is its summary, or ``error`` what it raised).

        A node that answered in batch mode ends the request here; a node that failed on the
        backend's side raises; otherwise frames may still be in flight and the relay stream
        decides.

        Raises:
            HPCTaskError: The task raised or returned something that is not a summary.
            HPCRemoteError: The node's backend failed, or the node switched to batch mode
                after tokens were streamed.
            HPCError: The node could not reach the relay and did not answer in batch mode.
        """
        self._since = now
        if error is not None:
            failed = f"HPC task failed: {describe(error)}"
            raise errors.HPCTaskError(failed, tokens=self.tokens) from error
        if not isinstance(result, dict):
            kind = type(result).__name__
            raise errors.HPCTaskError(f"HPC task returned {kind}, not a summary dict")
        summary: protocol.BatchSummary = result  # type: ignore[assignment]
        if summary.get("mode") == "batch" and summary.get("ok"):
            return self._batch_answer(summary, now)
        if not summary.get("ok") and summary.get("error_kind") != "relay":
            failed = f"HPC task failed: {summary.get('error')}"
            raise errors.HPCRemoteError(failed, tokens=self.tokens)
        if not summary.get("ok") and self.started_at is None:
            raise HPCError(
                f"HPC task could not stream: {summary.get('error')}", tokens=self.tokens)
        return []

    def _batch_answer(
        self, summary: protocol.BatchSummary, now: float
    ) -> list[ChatGenerationChunk]:
        if self.tokens:
            raise errors.HPCRemoteError(
                "HPC task switched to batch mode after streaming", tokens=self.tokens)
        meta = {
            "hpc_mode": "batch",
            "hpc_fallback_reason": "relay unreachable from the HPC node: "
            + str(summary.get("relay_error")),
            "hpc_total_ms": (now - self.submitted) * 1000,
        }
        chunks = batch_chunks(summary["completion"], meta)
        self.phase = "done"
        return chunks

    def receive_relay_error(self, exc: BaseException) -> NoReturn:
        """The relay stream failed: raise the error that names what happened.

        Raises:
            HPCRemoteError: The node reported an error (an authentic error frame).
            RelayFailed: With ``failover``, the relay was lost before the first token.
            HPCError: Any other relay failure (integrity, lost connection after tokens).
        """
        import relay

        if isinstance(exc, relay.RemoteError):
            reported = f"HPC node reported: {exc.message}"
            raise errors.HPCRemoteError(reported, tokens=self.tokens) from exc
        if self.failover and not self.tokens and _relay_lost(exc):
            raise errors.RelayFailed(f"relay lost before the first token: {describe(exc)}") from exc
        raise HPCError(
            f"relay stream failed after {self.tokens} tokens: {describe(exc)}", tokens=self.tokens
        ) from exc

    def receive_end(
        self, now: float, consumer_usage: dict[str, Any] | None = None
    ) -> ChatGenerationChunk:
        """The relay stream ended cleanly: the final chunk, with usage and the HPC metadata.

        Args:
            now: The time.
            consumer_usage: The usage the end frame carried (used when no ``usage`` payload
                came).
        """
        measured = self._usage or consumer_usage or {}
        meta: dict[str, Any] = {
            "hpc_mode": "stream",
            "model_name": self._model_name or self.model,
            "hpc_queue_ms": None if self.started_at is None
            else (self.started_at - self.submitted) * 1000,
            "hpc_backend_ttft_ms": None if self._backend_ttft is None
            else self._backend_ttft * 1000,
            "hpc_total_ms": (now - self.submitted) * 1000,
        }
        if not measured.get("prompt_tokens"):
            # The node's backend sent no usage (vLLM does when asked, as the node asks):
            # the output was counted by chunks and the prompt is left to the caller.
            meta["usage_estimated"] = True
        self.phase = "done"
        return _final_chunk(_usage(measured, self.tokens), meta, self._finish_reason)


# -- the asyncio driver ----------------------------------------------------------------------


def _receive_frame(
    core: _RelayStream, frame: asyncio.Future[Any], now: float, consumer: Any
) -> list[ChatGenerationChunk]:
    """Feed one finished read of the relay stream (a payload, its end, or its error)."""
    import relay

    try:
        payload = frame.result()
    except StopAsyncIteration:
        return [core.receive_end(now, getattr(consumer, "usage", None))]
    except relay.RelayError as exc:
        core.receive_relay_error(exc)
    return core.receive_payload(payload, now)


async def drive(
    core: _RelayStream, consumer: Any, future: concurrent.futures.Future[Any]
) -> AsyncIterator[ChatGenerationChunk]:
    """Run ``core`` over an open relay consumer and the submitted task, yielding its chunks.

    Races the consumer's next payload against the task's completion and the core's deadline;
    on exit (end, error, or the caller closing the generator) the pending read is cancelled.
    Time the caller spends between two chunks is not the node's silence: the phase timer
    restarts when the driver waits again (:meth:`_RelayStream.resume`).

    Args:
        core: The request's state.
        consumer: An open :class:`relay.Consumer` (async iterator of payloads, ``usage``).
        future: The submitted :func:`hpc_functions.stream_chat` task.

    Yields:
        The chunks, the last one carrying usage and metadata.
    """

    frames = consumer.__aiter__()
    task: asyncio.Future[Any] | None = asyncio.wrap_future(future)
    next_frame: asyncio.Future[Any] | None = None
    try:
        while not core.done:
            if next_frame is None:
                next_frame = asyncio.ensure_future(frames.__anext__())
            waiting = {next_frame} | ({task} if task is not None else set())
            wait = max(0.0, core.deadline() - time.monotonic())
            done, _ = await asyncio.wait(waiting, timeout=wait,
                                         return_when=asyncio.FIRST_COMPLETED)
            now = time.monotonic()
            out: list[ChatGenerationChunk] = []
            if not done:
                core.tick(now)
            elif task is not None and task in done and next_frame not in done:
                finished, task = task, None
                error = finished.exception()
                out = core.receive_task_result(None if error else finished.result(), now, error)
            else:
                frame, next_frame = next_frame, None
                out = _receive_frame(core, frame, now, consumer)
            for chunk in out:
                yield chunk
            if out:
                core.resume(time.monotonic())
    finally:
        if next_frame is not None and not next_frame.done():
            next_frame.cancel()
            with contextlib.suppress(BaseException):
                await next_frame
