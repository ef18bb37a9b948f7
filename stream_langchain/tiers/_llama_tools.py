"""Tool calling for in-process llama.cpp models through the model's own chat template.

Qwen2.5's GGUF carries a Jinja chat template that renders OpenAI-style ``tools`` into the
system prompt and asks for ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``.
llama-cpp-python renders that template (``chat_format=None``) with the request's tools but
does not parse the answer, so this module does: it finds the calls in the text (inside
``<tool_call>`` tags, a fenced JSON block, or a bare JSON object, which is what the models
write in practice) and keeps only calls to a bound tool with an object of arguments.

A forced choice (``tool_choice="any"``/``"required"`` or a tool's name) is enforced with a
JSON-schema grammar: the model can only write a valid call to an allowed tool.

Example:
    >>> calls, text = parse_tool_calls('<tool_call>{"name": "add", "arguments": {"a": 1}}'
    ...                                '</tool_call>', {"add"})
    >>> calls[0]["name"], calls[0]["args"], text
    ('add', {'a': 1}, '')
    >>> parse_tool_calls("Paris.", {"add"})
    ([], 'Paris.')
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable
from typing import Any

__all__ = ["coerce_args", "forced_tools", "parse_tool_calls", "prepare_messages",
           "tool_call_schema"]

_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)
_FENCED = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.S)


def _call_of(raw: str, names: set[str]) -> dict[str, Any] | None:
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    name = obj.get("name")
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if name not in names or not isinstance(args, dict):
        return None
    return {"name": name, "args": args, "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "tool_call"}


def parse_tool_calls(text: str, names: Iterable[str]) -> tuple[list[dict[str, Any]], str]:
    """The tool calls in a model's answer, and the text left once they are taken out.

    Args:
        text: The model's whole answer.
        names: The names of the bound tools; calls to anything else are not calls.

    Returns:
        ``(calls, rest)``: LangChain ``ToolCall`` dicts and the remaining text (the whole
        answer when no call was found).
    """
    allowed = set(names)
    tagged = _TAGGED.findall(text)
    if tagged:
        calls = [c for raw in tagged if (c := _call_of(raw, allowed)) is not None]
        if calls:
            return calls, _TAGGED.sub("", text).strip()
    stripped = text.strip()
    fenced = _FENCED.fullmatch(stripped)
    candidate = fenced.group(1) if fenced else stripped
    if candidate.startswith("{"):
        call = _call_of(candidate, allowed)
        if call is not None:
            return [call], ""
        # several objects, one per line
        lines = [ln for ln in candidate.splitlines() if ln.strip()]
        calls = [c for ln in lines if (c := _call_of(ln, allowed)) is not None]
        if calls and len(calls) == len(lines):
            return calls, ""
    return [], text


def coerce_args(args: dict[str, Any], parameters: dict[str, Any] | None) -> dict[str, Any]:
    """Arguments with numbers and booleans that the model wrote as strings turned into what the
    tool's JSON schema declares (small models write ``{"a": "12"}`` for an integer ``a``).

    Example:
        >>> coerce_args({"a": "12", "b": 7, "c": "x"}, {"properties": {
        ...     "a": {"type": "integer"}, "b": {"type": "integer"}, "c": {"type": "integer"}}})
        {'a': 12, 'b': 7, 'c': 'x'}
    """
    props = (parameters or {}).get("properties") or {}
    out = dict(args)
    for key, value in args.items():
        kind = (props.get(key) or {}).get("type")
        if not isinstance(value, str):
            continue
        try:
            if kind == "integer":
                out[key] = int(value.strip())
            elif kind == "number":
                out[key] = float(value.strip())
            elif kind == "boolean" and value.strip().lower() in ("true", "false"):
                out[key] = value.strip().lower() == "true"
        except ValueError:
            pass  # left as written: the tool's own validation names the problem
    return out


def tool_call_schema(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """A JSON schema that only a call to one of ``tools`` (OpenAI format) satisfies."""
    options = []
    for tool in tools:
        fn = tool["function"]
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        options.append({"type": "object",
                        "properties": {"name": {"const": fn["name"]}, "arguments": params},
                        "required": ["name", "arguments"]})
    return options[0] if len(options) == 1 else {"anyOf": options}


def forced_tools(tools: list[dict[str, Any]], choice: Any) -> list[dict[str, Any]] | None:
    """The tools a ``tool_choice`` forces a call to, or ``None`` when it forces none.

    Raises:
        ValueError: ``choice`` names a tool that is not bound.
    """
    if choice in (None, "auto", "none"):
        return None
    if choice in ("any", "required", True):
        return tools
    name = choice
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") or choice.get("name")
    chosen = [t for t in tools if t["function"]["name"] == name]
    if not chosen:
        bound = ", ".join(t["function"]["name"] for t in tools)
        raise ValueError(f"tool_choice names {name!r}, which is not a bound tool ({bound})")
    return chosen


def prepare_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI messages as Qwen's template reads them: tool-call arguments as objects."""
    out = []
    for m in messages:
        calls = m.get("tool_calls")
        if calls:
            m = {**m, "content": m.get("content") or "", "tool_calls": [
                {**c, "function": {**c["function"],
                                   "arguments": _as_object(c["function"].get("arguments"))}}
                for c in calls]}
        out.append(m)
    return out


def _as_object(args: Any) -> Any:
    if isinstance(args, str):
        try:
            return json.loads(args)
        except ValueError:
            return args
    return args
