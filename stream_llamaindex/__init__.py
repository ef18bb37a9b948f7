"""STREAM for LlamaIndex: :class:`StreamLLM`, a LlamaIndex LLM over the ChatStream engine.

Example:
    >>> from stream_llamaindex import StreamLLM
    >>> StreamLLM.class_name()
    'StreamLLM'
"""

from __future__ import annotations

from stream_llamaindex.base import StreamLLM, StreamRoutingEvent, can_call_tools

__all__ = ["StreamLLM", "StreamRoutingEvent", "can_call_tools"]
