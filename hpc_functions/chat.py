"""Chat functions that run on the HPC node, next to the model server.

Globus Compute's rule applies: each task is self-contained. It imports what it needs inside
its body, and takes and returns plain data (dicts of str, int, float, bytes, lists). That makes
it serializable both by reference (the SDK's default ``DillCode``: the endpoint must have this
package installed) and by source (``PureSourceDill``, what :mod:`stream_langchain.tiers.hpc`
ships: the endpoint needs only ``relay`` and ``httpx``).

Shipping by source sends ``dill.source.getsource`` of the object handed to the Executor and
nothing else; the endpoint ``exec``\\ s that text in an empty namespace and calls the name.
For a function the text is its ``def`` block alone, so :func:`batch_chat` and :func:`ping`
are single functions. For a class it is the whole ``class`` block, so :class:`stream_chat`,
which has several steps, is a class whose methods are those steps: calling it runs the task
and returns the summary dict (its ``__new__`` returns it; no instance escapes). Annotations
use builtins only, because the shipped text is executed without this module's ``from
__future__ import annotations`` (a class's method annotations are evaluated when the class is
built, before any import has run).

``request`` is an OpenAI chat-completions body plus ``backend_url`` (the OpenAI-compatible
base URL of vLLM or llama.cpp on the node, for example ``http://127.0.0.1:8000/v1``) and
optionally ``backend_api_key``, ``backend_timeout`` (seconds: connecting, and waiting between
bytes of a stream) and ``backend_batch_timeout`` (seconds: waiting for a whole non-streamed
answer; default 600).

The payloads pushed through the relay (``start``, ``delta``, ``usage``) and the summary
returned are defined in :mod:`hpc_functions.protocol`; the functions here write those
literals themselves (they cannot import it on a node) and a test checks they agree.

Errors reach the consumer as an authentic error frame and are also in the returned summary.
"""

from __future__ import annotations

__all__ = ["batch_chat", "ping", "stream_chat"]


class stream_chat:  # noqa: N801 - called like the function it is (see the module docstring)
    """Stream a chat completion from the node's backend to the relay, sealed frame by frame.

    Call it like a function: ``stream_chat(request, relay)`` runs the task and returns its
    summary. It is a class only so that its steps travel with it when Globus Compute ships it
    by source; each method does one: read the request, check it, open the producer, forward
    the backend's stream line by line, end the stream, answer in batch mode when the relay
    cannot be reached.

    Args:
        request: OpenAI chat-completions body plus ``backend_url`` (and optionally
            ``backend_api_key``, ``backend_timeout``). ``stream`` is forced on.
        relay: ``url``, ``channel``, ``token`` (producer capability token), ``key`` (the
            per-request AES-256 key), optionally ``open_timeout`` (seconds) and
            ``batch_on_relay_error`` (bool: if the relay cannot be reached, run the request
            in batch mode and return the completion in the summary instead).

    Returns:
        A summary (:class:`hpc_functions.protocol.NodeSummary`): ``ok``, ``mode``
        (``"stream"`` or ``"batch"``), ``error`` (message or ``None``), ``error_kind``
        (``"backend"``, ``"relay"``, ``"request"`` or ``None``), ``cancelled`` (the consumer
        left early), ``frames`` (payloads sent), ``completion_tokens``, ``prompt_tokens``,
        ``backend_ttft_s`` (from sending the HTTP request to the backend until its first token
        arrived), ``duration_s`` and, in batch mode, ``completion`` (the full OpenAI response)
        and ``relay_error``.
    """

    def __new__(cls, request: dict, relay: dict) -> dict:  # type: ignore[misc]
        # Not an instance: the Executor calls what it was given and sends back what that
        # returns, which must be plain data (mypy wants __new__ to return an instance).
        task = object.__new__(cls)
        task._prepare(request, relay)
        return task._run()

    def _prepare(self, request: dict, relay: dict) -> None:
        """Read the request: the backend call to make, the summary to fill, the stream state."""
        import time

        self.started = time.monotonic()
        self.requested = self.started  # set again when the backend request is sent
        self.request = request
        self.relay = relay
        self.summary: dict = {
            "ok": False, "mode": "stream", "error": None, "error_kind": None, "cancelled": False,
            "frames": 0, "completion_tokens": 0, "prompt_tokens": 0, "backend_ttft_s": None,
            "duration_s": 0.0,
        }
        self.usage: dict = {}
        self.saw_done = False
        self.finish_reason: str | None = None
        self.tool_names: dict = {}
        self.body = {k: v for k, v in request.items() if not k.startswith("backend_")}
        self.body["stream"] = True
        self.body["stream_options"] = {"include_usage": True}
        self.endpoint = str(request.get("backend_url")).rstrip("/") + "/chat/completions"
        self.headers = {"Accept": "text/event-stream"}
        if request.get("backend_api_key"):
            self.headers["Authorization"] = f"Bearer {request['backend_api_key']}"
        self.timeout = float(request.get("backend_timeout") or 60.0)
        # Certificate loading costs ~20-40 ms per client; a plain-http backend (vLLM on the node)
        # has no TLS to verify, so skip it there. https backends are verified as usual.
        self.tls = self.endpoint.startswith("https://")

    def _run(self) -> dict:
        """Open the producer and stream; every failure ends in the summary (and, once the relay
        is reached, in an error frame)."""
        import httpx

        import relay as relay_lib

        problem = self._problem_in_request()
        try:
            self._open_producer()
        except (relay_lib.RelayError, OSError, ValueError, TypeError) as exc:
            return self._unreachable(problem, f"{type(exc).__name__}: {exc}")
        try:
            return self._fail(problem, "request") if problem else self._stream()
        except relay_lib.ChannelClosed:
            # The consumer went away: stop generating (leaving the httpx block closed the stream).
            return self._finish(
                cancelled=True, error="consumer closed the channel", error_kind="relay"
            )
        except relay_lib.RelayError as exc:
            return self._finish(
                error=f"relay failed mid-stream: {type(exc).__name__}: {exc}", error_kind="relay"
            )
        except httpx.HTTPError as exc:
            return self._fail(f"backend failed: {type(exc).__name__}: {exc}", "backend")
        finally:
            self._close_producer()

    def _finish(self, **updates: object) -> dict:
        """The summary, updated, with the task's duration."""
        import time

        self.summary.update(updates)
        self.summary["duration_s"] = time.monotonic() - self.started
        return self.summary

    def _problem_in_request(self) -> str:
        """What is wrong with the request or the relay settings, or ``""``."""
        backend_url = self.request.get("backend_url")
        if not isinstance(backend_url, str) or not backend_url.startswith(("http://", "https://")):
            return "request['backend_url'] must be an http(s) URL of an OpenAI-compatible API"
        if not isinstance(self.body.get("messages"), list) or not self.body["messages"]:
            return "request['messages'] must be a non-empty list of chat messages"
        missing = [k for k in ("url", "channel", "token", "key") if not self.relay.get(k)]
        return "relay is missing " + ", ".join(missing) if missing else ""

    def _open_producer(self) -> None:
        """Connect to the relay as this channel's producer."""
        import relay as relay_lib

        relay = self.relay
        self.producer = relay_lib.Producer(
            str(relay.get("url") or ""), str(relay.get("channel") or ""),
            str(relay.get("token") or ""), relay.get("key") or b"",
            open_timeout=float(relay.get("open_timeout") or 10.0),
        )
        self.producer.__enter__()

    def _close_producer(self) -> None:
        """Close the producer (sends nothing more; a dead connection is fine)."""
        try:
            self.producer.__exit__(None, None, None)
        except Exception:  # noqa: BLE001,S110 - closing a dead connection must not mask the result
            pass

    def _fail(self, message: str, kind: str) -> dict:
        """Tell the consumer (an authentic error frame, if the relay still takes it) and finish."""
        import relay as relay_lib

        try:
            self.producer.error(message)
        except relay_lib.RelayError:
            pass
        return self._finish(error=message, error_kind=kind)

    def _unreachable(self, problem: str, reason: str) -> dict:
        """The relay could not be reached: a bad request is said as such, else batch mode (if
        asked for) or a relay error."""
        if problem:
            return self._finish(error=problem, error_kind="request")
        if self.relay.get("batch_on_relay_error"):
            return self._batch_fallback(reason)
        return self._finish(error=f"relay unreachable: {reason}", error_kind="relay")

    def _batch_fallback(self, reason: str) -> dict:
        """Answer in batch mode: the whole completion goes back in the summary."""
        import httpx

        batch_body = dict(self.body)
        batch_body.pop("stream_options", None)
        batch_body["stream"] = False
        batch_timeout = float(self.request.get("backend_batch_timeout") or 600.0)
        try:
            whole = httpx.Timeout(batch_timeout, connect=min(self.timeout, 10.0))
            with httpx.Client(timeout=whole, headers=self.headers, verify=self.tls) as client:
                resp = client.post(self.endpoint, json=batch_body)
            if resp.status_code != 200:
                return self._finish(
                    error=f"relay unreachable ({reason}) and backend returned HTTP "
                    f"{resp.status_code}: {resp.text[:300]}",
                    error_kind="backend", mode="batch",
                )
            completion = resp.json()
        except httpx.HTTPError as exc:
            return self._finish(error=f"relay unreachable ({reason}) and backend failed: {exc!r}",
                                error_kind="backend", mode="batch")
        usage = completion.get("usage") or {}
        return self._finish(
            ok=True, mode="batch", completion=completion, relay_error=reason,
            completion_tokens=int(usage.get("completion_tokens") or 0),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
        )

    def _stream(self) -> dict:
        """Say ``start``, then forward the backend's event stream to the relay and end it."""
        import time

        import httpx

        self.producer.send({"type": "start", "node_time": time.time()})
        http_timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0))
        client = httpx.Client(timeout=http_timeout, headers=self.headers, verify=self.tls)
        self.requested = time.monotonic()  # backend TTFT is measured from here (the HTTP request)
        with client, client.stream("POST", self.endpoint, json=self.body) as resp:
            if resp.status_code != 200:
                resp.read()
                why = f"backend returned HTTP {resp.status_code}: {resp.text[:300]}"
                return self._fail(why, "backend")
            problem = ""
            for line in resp.iter_lines():
                problem = self._forward_line(line)
                if problem or self.saw_done:
                    break
            problem = problem or self._cut_short()
            if problem:
                return self._fail(problem, "backend")
        return self._end_stream()

    def _forward_line(self, line: str) -> str:
        """Forward one line of the backend's event stream; returns what went wrong, or ``""``."""
        import json

        if not line.startswith("data:"):
            return ""
        data = line[5:].strip()
        if data == "[DONE]":
            self.saw_done = True
            return ""
        try:
            event = json.loads(data)
        except ValueError:
            return f"backend sent a malformed stream event: {data[:120]!r}"
        if event.get("error"):
            return f"backend error: {event['error']}"
        if event.get("usage"):
            self.usage = dict(event["usage"])
        self._forward_event(event)
        return ""

    def _cut_short(self) -> str:
        """Why the ended stream is incomplete, or ``""``."""
        if self.finish_reason is not None:
            return ""
        # Every complete OpenAI-style stream names why it ended; a stream without that was
        # cut (connection lost, or a server that interrupts it for another request).
        why = "without a finish_reason" if self.saw_done else "before completion (no [DONE])"
        return f"backend stream ended {why}: the answer was cut short"

    def _forward_event(self, event: dict) -> None:
        """Send the first choice of one backend event as a delta payload (if it says anything)."""
        import time

        summary = self.summary
        for choice in event.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            payload: dict = {"type": "delta"}
            if delta.get("content"):
                payload["content"] = delta["content"]
            if delta.get("tool_calls"):
                payload["tool_calls"] = self._once(delta["tool_calls"])
            if delta.get("role"):
                payload["role"] = delta["role"]
            if choice.get("finish_reason"):
                payload["finish_reason"] = self.finish_reason = choice["finish_reason"]
            if len(payload) == 1:
                continue
            if "content" in payload or "tool_calls" in payload:
                summary["completion_tokens"] += 1
                if summary["backend_ttft_s"] is None:
                    summary["backend_ttft_s"] = time.monotonic() - self.requested
            if summary["frames"] == 0 and event.get("model"):
                payload["model"] = event["model"]
            self.producer.send(payload)
            summary["frames"] += 1

    def _once(self, tool_calls: list) -> list:
        """Tool-call deltas with each call's id and name sent once."""
        # OpenAI (and vLLM) send a tool call's id and name in its first delta only; some
        # servers (llama.cpp) repeat them in every delta, which would concatenate on merge.
        names = self.tool_names
        out = []
        for call in tool_calls:
            call = dict(call)
            fn = dict(call.get("function") or {})
            index = call.get("index", 0)
            if index in names:
                call.pop("id", None)
                call.pop("type", None)
                if fn.get("name") == names[index]:
                    fn.pop("name")
            else:
                names[index] = fn.get("name")
            call["function"] = fn
            out.append(call)
        return out

    def _end_stream(self) -> dict:
        """Send the usage payload and the end frame (which carries the same usage)."""
        summary = self.summary
        usage = self.usage
        if usage:
            counted = int(usage.get("completion_tokens") or 0)
            summary["completion_tokens"] = counted or summary["completion_tokens"]
            summary["prompt_tokens"] = int(usage.get("prompt_tokens") or 0)
        else:
            usage = {"completion_tokens": summary["completion_tokens"]}
        self.producer.send(
            {"type": "usage", "usage": usage, "backend_ttft_s": summary["backend_ttft_s"]})
        self.producer.close(usage=usage)
        return self._finish(ok=True)


def batch_chat(request: dict) -> dict:
    """Run one chat completion on the node's backend and return it whole (batch mode).

    This is the paper's batch baseline and the fallback when the relay is unreachable: the
    answer comes back only through the control plane, after the last token.

    Args:
        request: OpenAI chat-completions body plus ``backend_url`` (and optionally
            ``backend_api_key``, ``backend_batch_timeout``). ``stream`` is forced off.

    Returns:
        ``{"ok": True, "mode": "batch", "completion": <OpenAI response dict>,
        "completion_tokens": int, "prompt_tokens": int, "duration_s": float}``.

    Raises:
        ValueError: If the request is malformed.
        RuntimeError: If the backend cannot be reached or answers with an error status.
    """
    import time

    import httpx

    started = time.monotonic()
    backend_url = request.get("backend_url")
    if not isinstance(backend_url, str) or not backend_url.startswith(("http://", "https://")):
        raise ValueError(
            "request['backend_url'] must be an http(s) URL of an OpenAI-compatible API"
        )
    body = {k: v for k, v in request.items() if not k.startswith("backend_")}
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        raise ValueError("request['messages'] must be a non-empty list of chat messages")
    endpoint = backend_url.rstrip("/") + "/chat/completions"
    body["stream"] = False
    body.pop("stream_options", None)
    headers = {}
    if request.get("backend_api_key"):
        headers["Authorization"] = f"Bearer {request['backend_api_key']}"
    timeout = float(request.get("backend_batch_timeout") or 600.0)
    try:
        with httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            verify=endpoint.startswith("https://"),  # no TLS to verify on plain http
        ) as client:
            resp = client.post(endpoint, json=body, headers=headers)
    except httpx.HTTPError as exc:
        raise RuntimeError(f"backend failed: {type(exc).__name__}: {exc}") from None
    if resp.status_code != 200:
        raise RuntimeError(f"backend returned HTTP {resp.status_code}: {resp.text[:300]}")
    completion = resp.json()
    usage = completion.get("usage") or {}
    return {
        "ok": True,
        "mode": "batch",
        "completion": completion,
        "completion_tokens": int(usage.get("completion_tokens") or 0),
        "prompt_tokens": int(usage.get("prompt_tokens") or 0),
        "duration_s": time.monotonic() - started,
    }


def ping() -> dict:
    """Check that this worker can run the chat functions (a cheap health and warm-up task).

    Returns:
        ``{"ok": bool, "python": str, "missing": [module names that failed to import]}``.
    """
    import importlib
    import platform

    missing = []
    for name in ("httpx", "relay"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return {"ok": not missing, "python": platform.python_version(), "missing": missing}
