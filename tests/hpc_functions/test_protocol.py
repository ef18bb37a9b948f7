"""The node (hpc_functions.chat) and the client (tiers.hpc_stream) speak hpc_functions.protocol.

stream_chat cannot import the protocol module on a node (it is shipped by source), so it
writes the literals; these tests read what it writes, statically (every method of the shipped
class) and on a real run, and feed every kind to the client's state machine.
"""

from __future__ import annotations

import ast
import inspect
from typing import Any

import relay
from hpc_functions import chat, protocol, stream_chat
from stream_langchain.tiers.hpc_stream import HPCTimeouts, _RelayStream
from stream_langchain.tiers.llama_server import free_port
from tests.paced_backend import PacedBackend


def _definition(name: str) -> ast.FunctionDef | ast.ClassDef:
    """The module-level ``def`` or ``class`` named ``name`` (the whole block that ships)."""
    tree = ast.parse(inspect.getsource(chat))
    defs = (ast.FunctionDef, ast.ClassDef)
    return next(n for n in tree.body if isinstance(n, defs) and n.name == name)


def _named(node: ast.expr) -> str | None:
    """The name an expression ends in: ``f`` -> ``f``, ``self.f`` -> ``f``."""
    if isinstance(node, ast.Name):
        return node.id
    return node.attr if isinstance(node, ast.Attribute) else None


def _dict_literals(node: ast.AST) -> list[ast.Dict]:
    return [n for n in ast.walk(node) if isinstance(n, ast.Dict)]


def _keys(d: ast.Dict) -> set[str]:
    return {k.value for k in d.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}


def test_the_payload_kinds_stream_chat_writes_are_the_protocols() -> None:
    """Every {"type": ...} literal in stream_chat names a protocol kind, and all kinds occur."""
    kinds = set()
    for d in _dict_literals(_definition("stream_chat")):
        for k, v in zip(d.keys, d.values, strict=True):
            if isinstance(k, ast.Constant) and k.value == "type":
                assert isinstance(v, ast.Constant)
                kinds.add(v.value)
    assert kinds == protocol.PAYLOAD_KINDS


def test_the_summary_keys_stream_chat_writes_are_the_protocols() -> None:
    """The initial summary has exactly the protocol's keys; every key _finish(...) sets or a
    summary[...] subscript names is known."""
    fn = _definition("stream_chat")
    initials = [d for d in _dict_literals(fn) if "ok" in _keys(d)]
    assert len(initials) == 1 and _keys(initials[0]) == protocol.SUMMARY_KEYS
    finished: set[str] = set()
    for call in ast.walk(fn):
        if isinstance(call, ast.Call) and _named(call.func) == "_finish":
            finished.update(kw.arg for kw in call.keywords if kw.arg)
    written = {n.slice.value for n in ast.walk(fn) if isinstance(n, ast.Subscript)
               and _named(n.value) == "summary" and isinstance(n.slice, ast.Constant)}
    assert written and written <= protocol.SUMMARY_KEYS
    assert finished and finished <= protocol.BATCH_SUMMARY_KEYS
    assert {"completion", "relay_error"} <= finished


def _run(hpc_relay: tuple[str, str], backend_url: str) -> tuple[list[Any], dict[str, Any]]:
    url, secret = hpc_relay
    channel, key = relay.new_channel(), relay.new_key()
    tokens = relay.mint_tokens(secret, channel, ttl=60)
    info = {"url": url, "channel": channel, "token": tokens.producer, "key": key}
    summary = stream_chat({"model": "m", "max_tokens": 3, "backend_url": backend_url,
                           "messages": [{"role": "user", "content": "go"}]}, info)
    got: list[Any] = []
    consumer = relay.SyncConsumer(url, channel, tokens.consumer, key, first_frame_timeout=30)
    with consumer:
        got.extend(consumer)
    return got, summary


def test_a_real_stream_sends_only_protocol_kinds_and_summary_keys(
    hpc_relay: tuple[str, str],
) -> None:
    """Against a streaming backend: start, deltas, usage; the summary has the protocol's keys."""
    with PacedBackend(tokens=3, interval=0.001) as backend:
        payloads, summary = _run(hpc_relay, backend.base_url)
    assert summary["ok"], summary
    assert [p["type"] for p in payloads][0] == protocol.START
    assert {p["type"] for p in payloads} == protocol.PAYLOAD_KINDS
    assert set(summary) == protocol.SUMMARY_KEYS


def test_the_client_accepts_what_a_real_node_sends(hpc_relay: tuple[str, str]) -> None:
    """The payloads of a real run, fed to the client's state machine, end in a final chunk."""
    with PacedBackend(tokens=3, interval=0.001) as backend:
        payloads, _ = _run(hpc_relay, backend.base_url)
    core = _RelayStream(HPCTimeouts(), model="m", now=0.0)
    chunks = [c for p in payloads for c in core.receive_payload(p, 1.0)]
    final = core.receive_end(2.0)
    assert len(chunks) == 3 and core.tokens == 3
    assert final.message.response_metadata["hpc_queue_ms"] == 1000
    assert "usage_estimated" not in final.message.response_metadata


def test_a_failed_batch_fallback_summary_keys_are_the_protocols() -> None:
    """Relay unreachable, batch fallback on, backend refusing: still only protocol keys."""
    with PacedBackend(tokens=3, interval=0.001) as backend:
        info = {"url": f"ws://127.0.0.1:{free_port()}", "channel": relay.new_channel(),
                "token": "t", "key": relay.new_key(), "open_timeout": 2,
                "batch_on_relay_error": True}
        summary = stream_chat({"model": "m", "backend_url": backend.base_url,
                               "messages": [{"role": "user", "content": "go"}]}, info)
    assert summary["mode"] == "batch" and summary["error_kind"] == "backend"
    assert set(summary) == protocol.SUMMARY_KEYS
