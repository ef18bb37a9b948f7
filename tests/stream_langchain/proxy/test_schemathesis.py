"""Property-based requests generated from the proxy's own OpenAPI schema (schemathesis)
never get a 5xx from the real server: bad input is always a 4xx with a reason."""

from __future__ import annotations

import types
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis.internal.conjecture import utils as _cu
from hypothesis_jsonschema import _from_schema
from schemathesis.checks import not_a_server_error

from stream_langchain.proxy import Limits, ProxyConfig

from .conftest import WORDS, ScriptedModel, ServeFn, make_chat

schemathesis.experimental.OPEN_API_3_1.enable()  # FastAPI publishes OpenAPI 3.1


class _CompatMany(_cu.many):
    """``many.more()`` for hypothesis-jsonschema 0.23 (schemathesis 3's schema-to-data
    engine), which Hypothesis 6.16x replaced by ``with many(...) as e: for _ in e``. Without
    it every object with optional properties fails to generate (``AttributeError: 'many'
    object has no attribute 'more'``). Same decisions as the iterator, one per call."""

    def more(self) -> bool:
        if self._depth is None:
            self._depth = self.data.depth
            self._iterated = True
        self._finish_element()
        if not self._decide():
            return False
        self.count += 1
        self._in_element = True
        self._rejected = False
        return True


_from_schema.cu = types.SimpleNamespace(many=_CompatMany)  # only that module's one use


@pytest.fixture
def api_schema(serve: ServeFn, keys: dict[str, str]) -> Any:
    config = ProxyConfig(limits=Limits(rpm=100_000, tpm=100_000_000, max_concurrent=64))
    server = serve(make_chat(ScriptedModel(script=WORDS)), config)
    return schemathesis.from_uri(server.url + "/openapi.json", base_url=server.url)


schema = schemathesis.from_pytest_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: Any, keys: dict[str, str]) -> None:
    """Every generated request (admin key attached) is answered without a server error."""
    response = case.call(headers={"Authorization": f"Bearer {keys['admin']}"}, timeout=30)
    case.validate_response(response, checks=(not_a_server_error,))
