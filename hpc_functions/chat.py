"""Chat functions that run on the HPC node, next to the model server.

Globus Compute's rule applies: each function is self-contained. It imports what it needs
inside its body, defines its helpers inside its body, and takes and returns plain data
(dicts of str, int, float, bytes, lists). That makes it serializable both by reference (the
SDK's default ``DillCode``: the endpoint must have this package installed) and by source
(``PureSourceDill``, what :mod:`stream_langchain.tiers.hpc` ships: the endpoint needs only
``relay`` and ``httpx``). Annotations use builtins only, because source serialization
re-executes the ``def`` without this module's ``from __future__ import annotations``.

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


def stream_chat(request: dict, relay: dict) -> dict:
    """Stream a chat completion from the node's backend to the relay, sealed frame by frame.

    The helpers are defined inside (Globus Compute ships this function by source, alone); each
    is short and does one thing: check the request, open the producer, forward one backend
    event, forward the stream, answer in batch mode when the relay cannot be reached.

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
    import json
    import time

    import httpx

    import relay as relay_lib

    started = time.monotonic()
    summary: dict = {
        "ok": False, "mode": "stream", "error": None, "error_kind": None, "cancelled": False,
        "frames": 0, "completion_tokens": 0, "prompt_tokens": 0, "backend_ttft_s": None,
        "duration_s": 0.0,
    }
    state: dict = {"usage": {}, "saw_done": False, "finish_reason": None, "tool_names": {}}
    body = {k: v for k, v in request.items() if not k.startswith("backend_")}
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    endpoint = str(request.get("backend_url")).rstrip("/") + "/chat/completions"
    headers = {"Accept": "text/event-stream"}
    if request.get("backend_api_key"):
        headers["Authorization"] = f"Bearer {request['backend_api_key']}"
    timeout = float(request.get("backend_timeout") or 60.0)
    # Certificate loading costs ~20-40 ms per client; a plain-http backend (vLLM on the node)
    # has no TLS to verify, so skip it there. https backends are verified as usual.
    tls = endpoint.startswith("https://")

    def finish(**updates: object) -> dict:
        summary.update(updates)
        summary["duration_s"] = time.monotonic() - started
        return summary

    def problem_in_request() -> str:
        backend_url = request.get("backend_url")
        if not isinstance(backend_url, str) or not backend_url.startswith(("http://", "https://")):
            return "request['backend_url'] must be an http(s) URL of an OpenAI-compatible API"
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return "request['messages'] must be a non-empty list of chat messages"
        missing = [k for k in ("url", "channel", "token", "key") if not relay.get(k)]
        return "relay is missing " + ", ".join(missing) if missing else ""

    def batch_fallback(reason: str) -> dict:
        batch_body = dict(body)
        batch_body.pop("stream_options", None)
        batch_body["stream"] = False
        batch_timeout = float(request.get("backend_batch_timeout") or 600.0)
        try:
            whole = httpx.Timeout(batch_timeout, connect=min(timeout, 10.0))
            with httpx.Client(timeout=whole, headers=headers, verify=tls) as client:
                resp = client.post(endpoint, json=batch_body)
            if resp.status_code != 200:
                return finish(
                    error=f"relay unreachable ({reason}) and backend returned HTTP "
                    f"{resp.status_code}: {resp.text[:300]}",
                    error_kind="backend", mode="batch",
                )
            completion = resp.json()
        except httpx.HTTPError as exc:
            return finish(error=f"relay unreachable ({reason}) and backend failed: {exc!r}",
                          error_kind="backend", mode="batch")
        usage = completion.get("usage") or {}
        return finish(
            ok=True, mode="batch", completion=completion, relay_error=reason,
            completion_tokens=int(usage.get("completion_tokens") or 0),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
        )

    def open_producer() -> relay_lib.Producer:
        producer = relay_lib.Producer(
            str(relay.get("url") or ""), str(relay.get("channel") or ""),
            str(relay.get("token") or ""), relay.get("key") or b"",
            open_timeout=float(relay.get("open_timeout") or 10.0),
        )
        producer.__enter__()
        return producer

    def fail(producer: relay_lib.Producer, message: str, kind: str) -> dict:
        try:
            producer.error(message)
        except relay_lib.RelayError:
            pass
        return finish(error=message, error_kind=kind)

    def once(tool_calls: list) -> list:
        # OpenAI (and vLLM) send a tool call's id and name in its first delta only; some
        # servers (llama.cpp) repeat them in every delta, which would concatenate on merge.
        names = state["tool_names"]
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

    def forward_event(event: dict, producer: relay_lib.Producer, requested: float) -> None:
        """Send the first choice of one backend event as a delta payload (if it says anything)."""
        for choice in event.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            payload: dict = {"type": "delta"}
            if delta.get("content"):
                payload["content"] = delta["content"]
            if delta.get("tool_calls"):
                payload["tool_calls"] = once(delta["tool_calls"])
            if delta.get("role"):
                payload["role"] = delta["role"]
            if choice.get("finish_reason"):
                payload["finish_reason"] = state["finish_reason"] = choice["finish_reason"]
            if len(payload) == 1:
                continue
            if "content" in payload or "tool_calls" in payload:
                summary["completion_tokens"] += 1
                if summary["backend_ttft_s"] is None:
                    summary["backend_ttft_s"] = time.monotonic() - requested
            if summary["frames"] == 0 and event.get("model"):
                payload["model"] = event["model"]
            producer.send(payload)
            summary["frames"] += 1

    def forward_stream(resp: httpx.Response, producer: relay_lib.Producer, requested: float) -> str:
        """Forward the backend's event stream; returns what went wrong, or ``""``."""
        for line in resp.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                state["saw_done"] = True
                break
            try:
                event = json.loads(data)
            except ValueError:
                return f"backend sent a malformed stream event: {data[:120]!r}"
            if event.get("error"):
                return f"backend error: {event['error']}"
            if event.get("usage"):
                state["usage"] = dict(event["usage"])
            forward_event(event, producer, requested)
        if state["finish_reason"] is None:
            # Every complete OpenAI-style stream names why it ended; a stream without that
            # was cut (connection lost, or a server that interrupts it for another request).
            why = ("without a finish_reason" if state["saw_done"]
                   else "before completion (no [DONE])")
            return f"backend stream ended {why}: the answer was cut short"
        return ""

    def stream(producer: relay_lib.Producer) -> dict:
        producer.send({"type": "start", "node_time": time.time()})
        http_timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        client = httpx.Client(timeout=http_timeout, headers=headers, verify=tls)
        requested = time.monotonic()  # backend TTFT is measured from here (the HTTP request)
        with client, client.stream("POST", endpoint, json=body) as resp:
            if resp.status_code != 200:
                resp.read()
                why = f"backend returned HTTP {resp.status_code}: {resp.text[:300]}"
                return fail(producer, why, "backend")
            problem = forward_stream(resp, producer, requested)
            if problem:
                return fail(producer, problem, "backend")
        usage = state["usage"]
        if usage:
            counted = int(usage.get("completion_tokens") or 0)
            summary["completion_tokens"] = counted or summary["completion_tokens"]
            summary["prompt_tokens"] = int(usage.get("prompt_tokens") or 0)
        else:
            usage = {"completion_tokens": summary["completion_tokens"]}
        producer.send(
            {"type": "usage", "usage": usage, "backend_ttft_s": summary["backend_ttft_s"]})
        producer.close(usage=usage)
        return finish(ok=True)

    problem = problem_in_request()
    try:
        producer = open_producer()
    except (relay_lib.RelayError, OSError, ValueError, TypeError) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        if problem:
            return finish(error=problem, error_kind="request")
        if relay.get("batch_on_relay_error"):
            return batch_fallback(reason)
        return finish(error=f"relay unreachable: {reason}", error_kind="relay")
    try:
        return fail(producer, problem, "request") if problem else stream(producer)
    except relay_lib.ChannelClosed:
        # The consumer went away: stop generating (leaving the httpx block closed the stream).
        return finish(cancelled=True, error="consumer closed the channel", error_kind="relay")
    except relay_lib.RelayError as exc:
        return finish(
            error=f"relay failed mid-stream: {type(exc).__name__}: {exc}", error_kind="relay"
        )
    except httpx.HTTPError as exc:
        return fail(producer, f"backend failed: {type(exc).__name__}: {exc}", "backend")
    finally:
        try:
            producer.__exit__(None, None, None)
        except Exception:  # noqa: BLE001,S110 - closing a dead connection must not mask the result
            pass


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
