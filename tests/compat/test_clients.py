"""Client programs nobody here wrote, unmodified, against ``stream proxy``: the OpenAI Agents
SDK (Responses and chat-completions mode, streamed and not, a function tool, a structured
``output_type``), LlamaIndex ``OpenAILike`` (complete, stream_chat, FunctionAgent), the openai
SDK's ``chat.completions.parse`` / ``responses.parse`` with every Responses object and event
validated by the SDK's own types, and the ``llm`` CLI (prompt, chat, tools, ``--schema``).

Each client runs in its own cached environment (:mod:`tests.compat._venvs`). The assertions are
about mechanism (the loop completes, the tool is called, the JSON validates against the
schema), never the models' wording.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ._venvs import ensure_venv
from .conftest import Target, run_client

# A client program runs all its cases in one module-scoped fixture (one environment start):
# building the environments and the 1.5B's tool turns on 2 CPU cores take minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def _ok(results: dict[str, dict[str, Any]], case: str) -> dict[str, Any]:
    assert case in results, f"{case} produced no result: {sorted(results)}"
    out = results[case]
    assert out["ok"], out.get("trace") or out.get("error")
    return out


def _capital(value: Any) -> None:
    assert isinstance(value, dict) and set(value) == {"country", "capital"}
    assert all(isinstance(v, str) for v in value.values())


# ------------------------------------------------------------------------ OpenAI Agents SDK


@pytest.fixture(scope="module")
def agents(target: Target) -> dict[str, dict[str, Any]]:
    return run_client("openai3", "agents_sdk.py", target)


@pytest.mark.parametrize("case", ["responses-tool-plain", "responses-tool-stream",
                                  "chat-tool-plain", "chat-tool-stream"])
def test_agents_sdk_function_tool(agents: dict[str, dict[str, Any]], case: str) -> None:
    """The agent loop completes in both APIs, streamed and not: the tool is called, its result
    goes back, and the run ends with a text answer."""
    out = _ok(agents, case)
    assert out["tool_calls"], out
    assert isinstance(out["final"], str) and out["final_type"] == "str"
    if case.endswith("stream"):
        assert {"raw_response_event", "run_item_stream_event"} <= set(out["events"])


@pytest.mark.parametrize("case", ["responses-output_type", "chat-output_type"])
def test_agents_sdk_structured_output_type(agents: dict[str, dict[str, Any]],
                                           case: str) -> None:
    """A pydantic ``output_type`` comes back as that type (the schema is enforced)."""
    out = _ok(agents, case)
    assert out["final_type"] == "Capital"
    _capital(out["final"])


# ------------------------------------------------------------------------ openai SDK


@pytest.fixture(scope="module")
def sdk(target: Target) -> dict[str, dict[str, Any]]:
    return run_client("openai3", "openai_sdk.py", target)


@pytest.mark.parametrize("case", ["chat-parse", "responses-parse"])
def test_openai_parse_helpers(sdk: dict[str, dict[str, Any]], case: str) -> None:
    """``chat.completions.parse`` and ``responses.parse`` return the parsed pydantic object
    (seed and penalties accepted on the way)."""
    out = _ok(sdk, case)
    _capital(out["parsed"])


def test_chat_json_object_streamed(sdk: dict[str, dict[str, Any]]) -> None:
    """``response_format: json_object`` streamed: the concatenated deltas are a JSON object,
    each chunk a valid ``ChatCompletionChunk``."""
    assert isinstance(_ok(sdk, "chat-json-object-stream")["json"], dict)


def test_responses_neutral_defaults_and_usage(sdk: dict[str, dict[str, Any]]) -> None:
    """``include: []``, ``truncation: "disabled"``, ``store: false``, ... are accepted; the
    response validates (``usage.input_tokens_details.cache_write_tokens`` present) and echoes
    ``metadata``."""
    out = _ok(sdk, "responses-objects")
    assert out["status"] in ("completed", "incomplete") and out["text"]
    assert out["metadata"] == {"run": "compat"} and out["cache_write_tokens"] == 0


def test_responses_incomplete_at_max_output_tokens(sdk: dict[str, dict[str, Any]]) -> None:
    """A 4-token limit gives ``status: incomplete`` with reason ``max_output_tokens``, and the
    stream ends with ``response.incomplete``."""
    out = _ok(sdk, "responses-incomplete")
    assert (out["status"], out["reason"]) == ("incomplete", "max_output_tokens")
    assert (out["last_event"], out["last_status"]) == ("response.incomplete", "incomplete")
    assert out["item_status"] == ["incomplete"]


def test_responses_function_call_events(sdk: dict[str, dict[str, Any]]) -> None:
    """A forced strict function call: every event is a ``ResponseStreamEvent``, the call's
    arguments match the schema, ``strict`` and ``parallel_tool_calls: false`` are echoed."""
    out = _ok(sdk, "responses-tool")
    kinds = out["event_types"]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.function_call_arguments.done" in kinds
    assert [c["name"] for c in out["calls"]] == ["get_weather"]
    assert isinstance(out["calls"][0]["arguments"]["city"], str)
    assert out["tools"][0]["strict"] is True and out["parallel_tool_calls"] is False


# ------------------------------------------------------------------------ LlamaIndex


@pytest.fixture(scope="module")
def llamaindex(target: Target) -> dict[str, dict[str, Any]]:
    return run_client("llamaindex", "llamaindex_openai_like.py", target)


def test_llamaindex_complete_and_stream_chat(llamaindex: dict[str, dict[str, Any]]) -> None:
    """``complete`` returns text; ``stream_chat`` yields several deltas."""
    assert _ok(llamaindex, "complete")["text"].strip()
    out = _ok(llamaindex, "stream_chat")
    assert out["deltas"] > 1 and out["text"].strip()


def test_llamaindex_function_agent(llamaindex: dict[str, dict[str, Any]]) -> None:
    """A FunctionAgent calls the tool through the proxy and finishes with an answer."""
    out = _ok(llamaindex, "function_agent")
    assert out["tool_calls"] and out["answer"].strip()


# ------------------------------------------------------------------------ llm CLI


@pytest.fixture(scope="module")
def llm_cli(target: Target, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``llm`` with the proxy's models in ``extra-openai-models.yaml`` (and its key)."""
    home = tmp_path_factory.mktemp("llm")
    models = [{"model_id": name, "model_name": name, "api_base": target.url,
               "api_key_name": "stream", "supports_tools": True, "supports_schema": True}
              for name in (target.text_model, target.tool_model)]
    (home / "extra-openai-models.yaml").write_text(json.dumps(models))  # JSON is YAML
    (home / "keys.json").write_text(json.dumps({"stream": target.key}))
    binary = Path(ensure_venv("openai3")) / "bin" / "llm"

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(binary), *args], input=stdin, capture_output=True,
                              text=True, timeout=900, check=False,
                              env=target.env(LLM_USER_PATH=str(home)))
    return run


def test_llm_prompt_and_chat(llm_cli: Any, target: Target) -> None:
    """``llm -m stream-local`` answers (streamed), and ``llm chat`` holds a two-turn chat."""
    out = llm_cli("-m", target.text_model, "-o", "max_tokens", "16", "-o", "seed", "1",
                  "Name a colour.")
    assert out.returncode == 0 and out.stdout.strip(), out.stderr
    chat = llm_cli("chat", "-m", target.text_model, "-o", "max_tokens", "16",
                   stdin="Name a colour.\nAnd another one.\nquit\n")
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.count("> ") >= 2, chat.stdout


def test_llm_schema(llm_cli: Any, target: Target) -> None:
    """``--schema`` comes back as JSON valid for the schema."""
    out = llm_cli("-m", target.text_model, "--schema", "country, capital",
                  "Which country has Paris as its capital?")
    assert out.returncode == 0, out.stderr
    _capital(json.loads(out.stdout))


def test_llm_tools(llm_cli: Any, target: Target) -> None:
    """``--functions``: the model calls the tool (``--td`` shows the call and its result) and
    the chain ends with an answer."""
    code = ("def get_weather(city: str) -> str:\n"
            "    \"Today's weather in a city.\"\n"
            "    return f'Sunny and 21 degrees in {city}.'\n")
    out = llm_cli("-m", target.tool_model, "--functions", code, "--td", "-o", "max_tokens",
                  "64", "What is the weather in Paris? Use the get_weather tool.")
    assert out.returncode == 0, out.stderr
    assert "get_weather" in out.stdout + out.stderr and "Sunny" in out.stdout + out.stderr


# ------------------------------------------------------------------------ access log


def test_access_log_names_every_4xx(target: Target, sdk: dict[str, dict[str, Any]]) -> None:
    """After the clients ran, no request was refused without its code in the access log (a
    refusal here would be a client the proxy does not take), and a deliberate 400 names its
    code and parameter."""
    import httpx

    r = httpx.post(target.url + "/responses", headers={"authorization": f"Bearer {target.key}"},
                   json={"model": target.text_model, "input": "hi", "include": ["x"]})
    assert r.status_code == 400
    refused = [line for line in target.access if 400 <= (line.get("status") or 0) < 500]
    assert refused and all(line.get("error_code") for line in refused), refused
    assert refused[-1]["error_code"] == "unsupported_parameter"
    assert refused[-1]["error_param"] == "include"
