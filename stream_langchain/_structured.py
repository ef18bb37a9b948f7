"""``with_structured_output(method="json_schema" | "json_mode")`` for ChatStream.

The schema travels as the OpenAI ``response_format`` to whichever tier answers (the in-process
llama.cpp tier turns it into a JSON-schema grammar; OpenAI-compatible tiers pass it on), and
the answer's text is parsed, instead of binding the schema as a forced tool call."""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_json_schema
from langchain_core.utils.pydantic import is_basemodel_subclass

__all__ = ["json_schema_output"]


def json_schema_output(model: BaseChatModel, schema: dict[str, Any] | type, *,
                       include_raw: bool = False, strict: bool | None = None,
                       json_mode: bool = False) -> Runnable[Any, Any]:
    """``model`` bound to answer JSON valid for ``schema``, parsed (a pydantic object for a
    pydantic class, else a dict), as :meth:`BaseChatModel.with_structured_output` returns.

    Args:
        model: The chat model (ChatStream).
        schema: A pydantic class, a TypedDict or a JSON schema.
        include_raw: Return ``{"raw", "parsed", "parsing_error"}`` instead.
        strict: Passed as ``json_schema.strict`` when given.
        json_mode: Ask only for a JSON object (``response_format`` ``json_object``; the
            prompt must say which keys), as ``method="json_mode"``.
    """
    json_schema = convert_to_json_schema(schema)
    spec: dict[str, Any] = {"name": str(json_schema.get("title") or "answer"),
                            "schema": json_schema}
    if strict is not None:
        spec["strict"] = strict
    response_format = ({"type": "json_object"} if json_mode else
                       {"type": "json_schema", "json_schema": spec})
    method = "json_mode" if json_mode else "json_schema"
    llm = model.bind(response_format=response_format,
                     ls_structured_output_format={"kwargs": {"method": method},
                                                  "schema": schema})
    parser: Runnable[Any, Any] = (
        PydanticOutputParser(pydantic_object=schema)  # type: ignore[arg-type]
        if isinstance(schema, type) and is_basemodel_subclass(schema) else JsonOutputParser())
    if not include_raw:
        return llm | parser
    parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser,
                                        parsing_error=lambda _: None)
    fallback = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=llm) | parsed.with_fallbacks([fallback],
                                                        exception_key="parsing_error")
