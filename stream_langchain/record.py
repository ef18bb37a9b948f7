"""The routing record: what one request did, as every face reads it.

A :class:`~stream_langchain.ChatStream` answer carries it in
``AIMessage.response_metadata["stream"]`` (and in the last streamed chunk's); StreamLLM in
``additional_kwargs["stream"]``; the proxy in the ``stream`` field of its responses and the
``x-stream-route`` header (the public keys only). The first chunk of a tier's stream (before
its first token when the tier opens with an empty chunk) carries the early part,
:class:`RouteHint`, in ``response_metadata["stream_route"]``.

The request's run (``stream_langchain._run.RequestRun``) builds it, in one place; consumers
read it through :meth:`RouteRecord.from_metadata` instead of literal keys. The wire shape is
:meth:`RouteRecord.to_dict`: a plain JSON-able dict, the keys below, always in this order
(optional keys only when they apply).

Example:
    >>> rec = RouteRecord(tier="local", model="qwen", complexity="LOW",
    ...                   judged_complexity="LOW", confidence=0.93, judge="keyword",
    ...                   judge_ms=0.05, context_tokens=12)
    >>> meta = {"stream": rec.to_dict()}
    >>> back = RouteRecord.from_metadata(meta)
    >>> back == rec, back.tier, back.fallbacks
    (True, 'local', [])
    >>> RouteRecord.from_metadata({}) is None
    True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

__all__ = ["RECORD_KEY", "HINT_KEY", "Fallback", "RouteHint", "RouteRecord", "Skip",
           "TIER_METADATA_KEYS", "Usage"]

RECORD_KEY = "stream"
"""``response_metadata`` key of the full record (last chunk, final message)."""
HINT_KEY = "stream_route"
"""``response_metadata`` key of the early :class:`RouteHint` (a tier's first chunk)."""

TIER_METADATA_KEYS = ("hpc_mode", "hpc_fallback_reason", "hpc_queue_ms",
                      "hpc_backend_ttft_ms", "hpc_total_ms", "hpc_relay", "hpc_endpoint",
                      "hpc_failovers")
"""Keys a tier reports in its chunks' ``response_metadata`` that the record carries as they
came (today: the HPC tier's, see :class:`~stream_langchain.tiers.hpc.ChatHPC`)."""


class Fallback(TypedDict):
    """A tier that failed during the request."""

    tier: str
    error: str
    """One line: the exception type and its first line (``errors.describe``)."""


class Skip(TypedDict):
    """A tier left out of the route before it was tried."""

    tier: str
    reason: str


class Usage(TypedDict):
    """Tokens the answering tiers measured (estimated when ``usage_estimated``)."""

    input_tokens: int
    output_tokens: int


@dataclass
class RouteHint:
    """The decision as known when a tier's stream begins (``response_metadata["stream_route"]``
    on its first chunk).

    ``fallbacks`` is the same list as the record's (``{"tier", "error"}`` each), never a count.

    Example:
        >>> RouteHint.from_metadata({"stream_route": {"tier": "hpc", "model": "m",
        ...     "complexity": "MEDIUM", "judge": "forced", "judge_ms": 0.0,
        ...     "fallbacks": [{"tier": "local", "error": "OSError: down"}]}}).fallbacks
        [{'tier': 'local', 'error': 'OSError: down'}]
    """

    tier: str
    """The tier streaming the answer."""
    model: str
    """Its model's name (see :func:`stream_langchain.capabilities.model_name`)."""
    complexity: str
    """``LOW | MEDIUM | HIGH`` as routed."""
    judge: str
    """The judge's name (``forced`` when the caller forced the tier)."""
    judge_ms: float
    """Time spent judging."""
    fallbacks: list[Fallback] = field(default_factory=list)
    """Tiers that failed before this one."""
    absent: frozenset[str] = field(default=frozenset(), compare=False, repr=False)
    """Keys missing from the dict this hint was read from (left out again by
    :meth:`to_dict`)."""

    def to_dict(self) -> dict[str, Any]:
        """The wire shape (a fresh dict)."""
        out = {"tier": self.tier, "model": self.model, "complexity": self.complexity,
               "judge": self.judge, "judge_ms": self.judge_ms,
               "fallbacks": list(self.fallbacks)}
        for name in self.absent:
            del out[name]
        return out

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> RouteHint | None:
        """The hint in a chunk's ``response_metadata``, or ``None`` when it has none."""
        raw = metadata.get(HINT_KEY)
        if not isinstance(raw, Mapping):
            return None
        fallbacks = raw.get("fallbacks") or []
        return cls(tier=raw.get("tier", ""), model=raw.get("model", ""),
                   complexity=raw.get("complexity", ""), judge=raw.get("judge", ""),
                   judge_ms=raw.get("judge_ms", 0.0),
                   fallbacks=list(fallbacks) if isinstance(fallbacks, list) else [],
                   absent=frozenset(_HINT_KEYS - raw.keys()))


_HINT_KEYS = frozenset({"tier", "model", "complexity", "judge", "judge_ms", "fallbacks"})


# Keys that are written only when they apply: name -> "is it present" for its value.
def _set(value: Any) -> bool:
    return value is not None


def _truthy(value: Any) -> bool:
    return bool(value)


_OPTIONAL: dict[str, Any] = {
    "context_fitted": _set, "summary_wait_ms": _truthy, "summarizer_calls": _truthy,
    "summarizer_input_tokens": None,  # with summarizer_calls
    "summarizer_error": _truthy, "judge_errors": _truthy, "needs": _set,
    "tier_metadata": None,  # spread, see to_dict
    "ollama": _set, "usage_estimated": _truthy, "usage": _set, "cloud_cost_usd": _set,
    "cloud_budget_remaining_usd": _set, "high_threshold": _set,
}


@dataclass
class RouteRecord:
    """The routing record (``response_metadata["stream"]``): one request, start to end.

    Always present, in this order: ``tier`` … ``override``. Then, only when they apply:
    the fit's extra fields, ``judge_errors``, ``needs``, the tier's own metadata
    (:data:`TIER_METADATA_KEYS`), ``ollama``, ``usage_estimated``, ``usage``, the cloud's cost
    and budget, ``high_threshold``; last, keys this version does not know (:attr:`extra`),
    so a record read from a newer STREAM round-trips.

    Example:
        >>> rec = RouteRecord(tier="cloud", model="gpt-4o-mini", complexity="HIGH",
        ...                   judged_complexity="HIGH", confidence=0.8, judge="embedded",
        ...                   judge_ms=3.1, usage={"input_tokens": 9, "output_tokens": 4},
        ...                   cloud_cost_usd=0.0001)
        >>> d = rec.to_dict()
        >>> list(d)[:3], list(d)[-2:], "ollama" in d
        (['tier', 'model', 'complexity'], ['usage', 'cloud_cost_usd'], False)
    """

    tier: str
    """The tier that gave the (last part of the) answer: ``local | hpc | cloud``."""
    model: str
    """That tier's model name."""
    complexity: str
    """``LOW | MEDIUM | HIGH`` as routed (after ``high_threshold``; ``MEDIUM`` when forced)."""
    judged_complexity: str
    """What the judge said."""
    confidence: float
    """The judge's confidence in it (0 when forced), rounded to 4 places."""
    judge: str
    """The judge's name (``forced``: the caller forced the tier and nothing was judged)."""
    judge_ms: float
    """Time spent judging, ms."""
    judge_cached: bool = False
    """The judgement came from the judge's cache."""
    ttft_ms: float | None = None
    """Time from the request to the first output, ms (``None``: no output)."""
    total_ms: float = 0.0
    """Time from the request to the record, ms."""
    summarized: bool = False
    """A summary of older turns replaced them in what was sent."""
    context_tokens: int = 0
    """The conversation's size, tokens (cl100k, images at ``image_tokens`` each)."""
    context_tokens_before: int = 0
    """Its size in the answering tier's tokenizer, before fitting."""
    context_tokens_after: int = 0
    """The size of what was sent."""
    summary_cached: bool = False
    """The summary came from the cache."""
    summarizer_ms: float | None = None
    """Time spent in summarizer calls this request, ms."""
    summarizer: str | None = None
    """The summarizer model's name, when a summary was used or attempted."""
    fallback_truncated: bool = False
    """The summarizer failed or was skipped, so the oldest turns were dropped instead."""
    summary_pending: bool = False
    """A summary for this conversation was still being written when the request went on."""
    recalled_turns: int = 0
    """Evicted turns quoted back into the prompt."""
    fallbacks: list[Fallback] = field(default_factory=list)
    """Tiers that failed, in order (``{"tier", "error"}``)."""
    failover: bool = False
    """The answer switched tier after its first token."""
    tiers: list[str] = field(default_factory=list)
    """Tiers that produced output, in order (``[tier]`` when only one did, or none)."""
    skipped: list[Skip] = field(default_factory=list)
    """Tiers left out and why (health, budget, privacy, capability, context)."""
    override: str | None = None
    """The tier the caller forced, if any."""
    # -- only when they apply
    context_fitted: bool | None = None
    """Whether fitting changed the conversation (present when a fitter ran)."""
    summary_wait_ms: float = 0.0
    """Time waited for a summary being written (present when non-zero)."""
    summarizer_calls: int = 0
    """Summarizer calls this request (present, with the next, when non-zero)."""
    summarizer_input_tokens: int = 0
    """Tokens those calls read."""
    summarizer_error: str | None = None
    """Why the summarizer was not used, when it was not."""
    judge_errors: list[str] = field(default_factory=list)
    """Judges that failed before the one that answered."""
    needs: dict[str, Any] | None = None
    """What the request needs of a tier: ``{"images", "image_urls", "tools"}``."""
    tier_metadata: dict[str, Any] = field(default_factory=dict)
    """What the tier reported, :data:`TIER_METADATA_KEYS` only, spread into the record as
    it came (for example ``hpc_mode``); read with :meth:`tier_value`."""
    ollama: dict[str, Any] | None = None
    """An Ollama tier's window and where it came from."""
    usage_estimated: bool = False
    """Some of :attr:`usage` was counted here because the tier did not report it."""
    usage: Usage | None = None
    """Tokens in and out (present on every answer)."""
    cloud_cost_usd: float | None = None
    """What the cloud tier charged (cloud answers)."""
    cloud_budget_remaining_usd: float | None = None
    """What is left of ``cloud_budget_usd`` (when it is finite)."""
    high_threshold: float | None = None
    """The cost-quality threshold in force (when set)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys this version does not know, kept for the round trip."""
    absent: frozenset[str] = field(default=frozenset(), compare=False, repr=False)
    """Keys that are always written but were missing from the dict this record was read
    from (a partial record, such as the proxy's public fields): :meth:`to_dict` leaves
    them out again, so every record round-trips as it came."""

    def tier_value(self, key: str, default: Any = None) -> Any:
        """One of the tier's own fields (``hpc_mode``, ``hpc_queue_ms``, ...)."""
        return self.tier_metadata.get(key, default)

    @property
    def hpc_mode(self) -> str | None:
        """``stream`` or ``batch`` when the HPC tier answered."""
        value = self.tier_metadata.get("hpc_mode")
        return value if isinstance(value, str) else None

    def to_dict(self) -> dict[str, Any]:
        """The wire shape: a fresh plain dict (lists and dicts copied one level)."""
        out: dict[str, Any] = {}
        absent = self.absent
        for name, test in _PLAN:
            if absent and name in absent:
                continue
            value = getattr(self, name)
            if test is _SPREAD:
                out.update(value)
            elif test is _WITH_CALLS:
                if self.summarizer_calls:
                    out[name] = value
            elif test is None or test(value):
                out[name] = _copy(value)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RouteRecord:
        """Read a record's wire shape; missing keys read as their defaults (``""`` for the
        names) and stay missing in :meth:`to_dict`."""
        known: dict[str, Any] = {}
        tier_meta: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            if key in _NAMES and key not in ("tier_metadata", "extra", "absent"):
                known[key] = _copy(value)
            elif key in TIER_METADATA_KEYS:
                tier_meta[key] = value
            else:
                extra[key] = value
        absent = _ALWAYS - known.keys()
        for name in _REQUIRED:
            known.setdefault(name, "" if name not in ("confidence", "judge_ms") else 0.0)
        return cls(**known, tier_metadata=tier_meta, extra=extra, absent=frozenset(absent))

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> RouteRecord | None:
        """The record in a message's ``response_metadata`` (or StreamLLM's
        ``additional_kwargs``), or ``None`` when it has none (not the last chunk)."""
        raw = metadata.get(RECORD_KEY)
        return cls.from_dict(raw) if isinstance(raw, Mapping) else None


def _copy(value: Any) -> Any:
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    return value


_FIELDS = dataclasses.fields(RouteRecord)
_SPREAD = object()
_WITH_CALLS = object()
_PLAN: tuple[tuple[str, Any], ...] = tuple(
    (f.name, _SPREAD if f.name in ("tier_metadata", "extra")
     else _WITH_CALLS if f.name == "summarizer_input_tokens"
     else _OPTIONAL.get(f.name))
    for f in _FIELDS if f.name != "absent")
"""How :meth:`RouteRecord.to_dict` writes each field, in order: always (``None``), when its
test passes, spread into the dict (the tier's metadata, unknown keys), or with the
summarizer's calls."""
_NAMES = frozenset(f.name for f in _FIELDS)
_REQUIRED = ("tier", "model", "complexity", "judged_complexity", "confidence", "judge",
             "judge_ms")
_ALWAYS = frozenset(f.name for f in _FIELDS if f.name not in _OPTIONAL
                    and f.name not in ("extra", "absent"))
