"""The HPC functions packed as the Globus Compute SDK packs a task, run by the endpoint's engines.

Each task is serialized with ``ComputeSerializer`` (function buffer + args/kwargs buffer in a
``globus_compute_common.messagepack`` ``Task``), executed by globus-compute-endpoint's own
``ThreadPoolEngine``, ``ProcessPoolEngine`` and ``GlobusComputeEngine`` (parsl's
HighThroughputExecutor on loopback) via ``engine.submit(GCFuture(task_id), task_bytes,
resource_specification={})``, and the ``Result`` is unpacked and deserialized as the SDK does.

The process workers run as an HPC node would: ``hpc_functions`` and ``stream_langchain`` are
not importable there (a ``sitecustomize`` on their ``PYTHONPATH`` blocks them), only ``relay``
(copied next to it) and the venv's third-party packages are. The GlobusComputeEngine workers
also have no entry of this source tree on ``sys.path`` (checked); the ProcessPoolEngine's
spawned workers inherit the test process's ``sys.path``, so there the import hook alone keeps
the client packages out. The shipped strategy (source, ``PureSourceDill``) works on both; the
SDK default (``DillCode``, by reference) fails.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from globus_compute_common import messagepack
from globus_compute_common.messagepack.message_types import Result, Task
from globus_compute_endpoint.engines import (
    GCFuture,
    GlobusComputeEngine,
    ProcessPoolEngine,
    ThreadPoolEngine,
)
from globus_compute_sdk.serialize import ComputeSerializer, DillCode

import relay
from hpc_functions import batch_chat, ping, stream_chat
from stream_langchain.tiers.hpc import ChatHPC, HPCTaskError, shipped_serializer
from stream_langchain.tiers.llama_server import LlamaServer, free_port
from tests.paced_backend import PacedBackend

REPO = Path(__file__).resolve().parents[2]

_SITECUSTOMIZE = '''
"""Make this interpreter look like an HPC node: the STREAM client packages are not installed."""
import importlib.abc
import sys

_BLOCKED = {"hpc_functions", "stream_langchain", "stream_llamaindex"}


class _NotInstalledHere(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (not installed on this node)")
        return None


sys.meta_path.insert(0, _NotInstalledHere())
'''


def where() -> dict:
    """Runs on a worker: where relay comes from and what is on sys.path there."""
    import sys

    import relay

    return {"relay": relay.__file__, "path": list(sys.path)}


class RemoteTaskError(RuntimeError):
    """The engine returned an error Result (the remote traceback is the message)."""


def pack_task(
    fn: Callable[..., Any], *args: Any, serializer: ComputeSerializer, **kwargs: Any
) -> tuple[uuid.UUID, bytes]:
    """Pack a call as the SDK + web service do: fn buffer then args/kwargs buffers, in a Task."""
    fn_buf = serializer.pack_buffers([serializer.serialize(fn)])
    args_buf = serializer.pack_buffers([serializer.serialize(args), serializer.serialize(kwargs)])
    task_id = uuid.uuid4()
    task = Task(task_id=task_id, container_id=None, container=None, task_buffer=fn_buf + args_buf)
    return task_id, messagepack.pack(task)


def unpack_result(packed: bytes, serializer: ComputeSerializer) -> Any:
    """Unpack an engine's Result and deserialize its data as the SDK would."""
    result = messagepack.unpack(packed)
    assert isinstance(result, Result)
    if result.is_error:
        raise RemoteTaskError(str(result.data))
    return serializer.deserialize(result.data)


class EngineExecutor(concurrent.futures.Executor):
    """A concurrent.futures.Executor over a globus-compute-endpoint engine (no cloud)."""

    def __init__(self, engine: Any, serializer: ComputeSerializer | None = None) -> None:
        self.engine = engine
        self.serializer = serializer or shipped_serializer()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        task_id, packed = pack_task(fn, *args, serializer=self.serializer, **kwargs)
        gc_future = GCFuture(task_id)
        out: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def done(f: concurrent.futures.Future[Any]) -> None:
            try:
                out.set_result(unpack_result(f.result(), self.serializer))
            except BaseException as exc:
                out.set_exception(exc)

        gc_future.add_done_callback(done)
        self.engine.submit(gc_future, packed, resource_specification={})
        return out


@pytest.fixture(scope="module")
def node_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PYTHONPATH dir for node-like workers: relay installed, client packages blocked."""
    site = tmp_path_factory.mktemp("node-site")
    shutil.copytree(REPO / "relay", site / "relay", ignore=shutil.ignore_patterns("__pycache__"))
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    return site


@pytest.fixture(autouse=True)
def _restore_cwd() -> Iterator[None]:
    """The endpoint's execute_task chdir()s into the run dir (in-process for the thread engine)."""
    cwd = os.getcwd()
    try:
        yield
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def thread_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadPoolEngine]:
    engine = ThreadPoolEngine(max_workers=2)
    engine.start(endpoint_id=uuid.uuid4(), run_dir=str(tmp_path_factory.mktemp("thread-ep")))
    try:
        yield engine
    finally:
        engine.shutdown(block=True)


@pytest.fixture(scope="module")
def process_engine(
    tmp_path_factory: pytest.TempPathFactory, node_site: Path, llama_server: LlamaServer
) -> Iterator[ProcessPoolEngine]:
    import multiprocessing

    engine = ProcessPoolEngine(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    engine.start(endpoint_id=uuid.uuid4(), run_dir=str(tmp_path_factory.mktemp("process-ep")))
    try:
        # The worker is spawned by the first task, with the node-like PYTHONPATH.
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("PYTHONPATH", str(node_site))
            serializer = shipped_serializer()
            _, packed = pack_task(ping, serializer=serializer)
            fut = GCFuture(uuid.uuid4())
            engine.submit(fut, packed, resource_specification={})
            assert unpack_result(fut.result(timeout=120), serializer)["ok"]
        yield engine
    finally:
        engine.shutdown(block=True)


@pytest.fixture(scope="module")
def gc_engine(
    tmp_path_factory: pytest.TempPathFactory, node_site: Path, llama_server: LlamaServer
) -> Iterator[GlobusComputeEngine]:
    from parsl.providers import LocalProvider

    run_dir = tmp_path_factory.mktemp("gce-ep")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        mp.setenv("GLOBUS_COMPUTE_USER_DIR", str(run_dir))
        mp.setenv("PYTHONPATH", str(node_site))
        mp.chdir(run_dir)
        engine = GlobusComputeEngine(
            address="127.0.0.1",
            max_workers_per_node=1,
            provider=LocalProvider(init_blocks=1, min_blocks=0, max_blocks=1),
        )
        try:
            engine.start(endpoint_id=uuid.uuid4(), run_dir=str(run_dir))
            executor = EngineExecutor(engine)
            assert executor.submit(ping).result(timeout=120)["ok"]
        except BaseException:
            engine.shutdown()
            raise
    try:
        yield engine
    finally:
        engine.shutdown()


ENGINES = ["thread_engine", "process_engine", "gc_engine"]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(request.param)


def test_ping_round_trip(engine: Any) -> None:
    """A packed ping task round-trips through the engine and reports relay + httpx present."""
    status = EngineExecutor(engine).submit(ping).result(timeout=60)
    assert status == {"ok": True, "python": status["python"], "missing": []}


def test_gce_worker_path_holds_no_source_tree(
    gc_engine: GlobusComputeEngine, node_site: Path
) -> None:
    """The GlobusComputeEngine worker imports relay from the node's install, and no entry of
    its sys.path lies inside this source tree."""
    seen = EngineExecutor(gc_engine).submit(where).result(timeout=60)
    assert Path(seen["relay"]).is_relative_to(node_site)
    venv = Path(sys.prefix).resolve()  # the venv may live inside the checkout; it is not source
    source = [
        p
        for p in seen["path"]
        if p
        and Path(p).exists()  # skips import-hook markers such as an editable install's
        and Path(p).resolve().is_relative_to(REPO)
        and not Path(p).resolve().is_relative_to(venv)
    ]
    assert source == []


@pytest.mark.parametrize("engine_name", ["process_engine", "gc_engine"])
def test_node_workers_cannot_import_the_client_packages(
    engine_name: str, request: pytest.FixtureRequest
) -> None:
    """The SDK's default by-reference strategy fails on a node without hpc_functions."""
    engine = request.getfixturevalue(engine_name)
    by_reference = ComputeSerializer(strategy_code=DillCode())
    with pytest.raises(RemoteTaskError, match="hpc_functions"):
        EngineExecutor(engine, by_reference).submit(ping).result(timeout=60)


def test_task_failure_through_engine_is_an_hpc_task_error(
    process_engine: ProcessPoolEngine, hpc_relay: tuple[str, str]
) -> None:
    """A task that cannot even load on the node surfaces as HPCTaskError before any chunk."""
    by_reference = EngineExecutor(process_engine, ComputeSerializer(strategy_code=DillCode()))
    llm = ChatHPC(executor=by_reference, relay_url=hpc_relay[0], relay_secret=hpc_relay[1])
    with pytest.raises(HPCTaskError, match="hpc_functions"):
        llm.invoke("hi")


@pytest.mark.slow
def test_batch_chat_through_engine(engine: Any, llama_server: LlamaServer) -> None:
    """batch_chat runs on the engine's worker and returns the whole completion as plain data."""
    request = {
        "model": "gemma-3-270m",
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 6,
        "backend_url": llama_server.base_url,
    }
    out = EngineExecutor(engine).submit(batch_chat, request).result(timeout=120)
    assert out["ok"] and out["mode"] == "batch"
    assert out["completion"]["choices"][0]["message"]["content"]
    assert 1 <= out["completion_tokens"] <= 6


@pytest.mark.slow
def test_chathpc_streams_through_engine_and_relay(
    engine: Any, hpc_relay: tuple[str, str], llama_server: LlamaServer
) -> None:
    """ChatHPC over an engine executor streams tokens through the relay (the real path)."""
    llm = ChatHPC(
        executor=EngineExecutor(engine),
        relay_url=hpc_relay[0],
        relay_secret=hpc_relay[1],
        backend_url=llama_server.base_url,
        max_tokens=8,
    )
    chunks = list(llm.stream("Name three colours."))
    assert sum(1 for c in chunks if c.content) >= 2
    final = [c for c in chunks if c.response_metadata.get("hpc_mode")]
    assert final and final[-1].response_metadata["hpc_mode"] == "stream"


def test_shipped_serializer_is_source_based() -> None:
    """ChatHPC ships functions by source, so the endpoint need not install this package."""
    serializer = shipped_serializer()
    payload = serializer.serialize(ping)
    assert "def ping" in payload
    restored = serializer.deserialize(payload)
    assert restored is not ping and restored()["ok"]


# -- stream_chat's steps travel with it ---------------------------------------------------------
# stream_chat is a class so that its methods ship with it (PureSourceDill sends the source of the
# object it is given: for a class, the whole class block). These tests pack it as the SDK packs a
# task, run it in a fresh worker process through the endpoint's own execute_task, and compare
# what it sends and returns with a direct call.

_WORKER = """
import importlib.util, json, pathlib, sys, uuid
from globus_compute_endpoint.engines.helper import execute_task

def importable(name):
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False

run_dir = pathlib.Path(sys.argv[1])
seen = {name: importable(name) for name in ("hpc_functions", "stream_langchain", "relay")}
for task_id, task_file in json.loads(sys.argv[2]):
    packed = execute_task(uuid.UUID(task_id), pathlib.Path(task_file).read_bytes(),
                          run_dir=run_dir)
    pathlib.Path(task_file + ".result").write_bytes(packed)
import relay
seen["relay_file"] = relay.__file__
print(json.dumps(seen))
"""


def _run_on_worker(
    calls: list[tuple[Callable[..., Any], tuple[Any, ...]]],
    *,
    serializer: ComputeSerializer,
    pythonpath: str,
    work: Path,
) -> tuple[list[bytes], dict[str, Any]]:
    """Pack each call, run them in one fresh worker process (``execute_task``, as the endpoint's
    workers do), return the packed Results and what the worker could import."""
    tasks = []
    for i, (fn, args) in enumerate(calls):
        task_id, packed = pack_task(fn, *args, serializer=serializer)
        (work / f"task{i}").write_bytes(packed)
        tasks.append((str(task_id), str(work / f"task{i}")))
    out = subprocess.run(
        [sys.executable, "-c", _WORKER, str(work / "run"), json.dumps(tasks)],
        cwd=work, env={**os.environ, "PYTHONPATH": pythonpath},
        capture_output=True, text=True, timeout=120, check=True,
    )
    return [Path(f + ".result").read_bytes() for _, f in tasks], json.loads(out.stdout)


def _steady(payloads: list[dict[str, Any]], summary: dict[str, Any]) -> Any:
    """Payloads and summary without the clock readings (which differ between two runs)."""
    clocks = {"node_time", "backend_ttft_s", "duration_s"}
    strip = [{k: v for k, v in p.items() if k not in clocks} for p in payloads]
    return strip, {k: v for k, v in summary.items() if k not in clocks}


def _stream_once(hpc_relay: tuple[str, str], run: Callable[[dict, dict], dict]) -> Any:
    url, secret = hpc_relay
    channel, key = relay.new_channel(), relay.new_key()
    tokens = relay.mint_tokens(secret, channel, ttl=60)
    info = {"url": url, "channel": channel, "token": tokens.producer, "key": key}
    with PacedBackend(tokens=3, interval=0.001) as backend:
        summary = run({"model": "m", "max_tokens": 3, "backend_url": backend.base_url,
                       "messages": [{"role": "user", "content": "go"}]}, info)
    consumer = relay.SyncConsumer(url, channel, tokens.consumer, key, first_frame_timeout=30)
    with consumer:
        payloads = list(consumer)
    kinds = [p["type"] for p in payloads]
    assert kinds == ["start"] + ["delta"] * summary["frames"] + ["usage"]  # frames: the deltas
    assert consumer.frames == len(payloads)
    return _steady(payloads, summary)


@pytest.mark.parametrize("shipped", ["by_source", "by_reference"])
def test_stream_chat_shipped_streams_as_a_direct_call_does(
    shipped: str, node_site: Path, hpc_relay: tuple[str, str], tmp_path: Path
) -> None:
    """stream_chat packed by source and run on a node without the client packages (or by
    reference, where hpc_functions is installed) sends the same payloads and returns the same
    summary as a direct call."""
    if shipped == "by_source":
        serializer, pythonpath = shipped_serializer(), str(node_site)
    else:
        serializer, pythonpath = ComputeSerializer(strategy_code=DillCode()), str(REPO)
    seen: dict[str, Any] = {}

    def on_worker(request: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
        results, facts = _run_on_worker([(stream_chat, (request, info))], serializer=serializer,
                                        pythonpath=pythonpath, work=tmp_path)
        seen.update(facts)
        return unpack_result(results[0], serializer)  # type: ignore[no-any-return]

    direct_payloads, direct_summary = _stream_once(hpc_relay, stream_chat)
    payloads, summary = _stream_once(hpc_relay, on_worker)
    assert summary["ok"] and summary["mode"] == "stream" and summary["completion_tokens"] == 3
    assert (payloads, summary) == (direct_payloads, direct_summary)
    node = shipped == "by_source"
    assert seen["hpc_functions"] is seen["stream_langchain"] is (not node)
    assert Path(seen["relay_file"]).is_relative_to(node_site) is node


def test_every_node_function_runs_by_source_on_a_bare_node(
    node_site: Path, tmp_path: Path
) -> None:
    """ping, batch_chat and stream_chat (batch fallback) run by source on a node without the
    client packages; their results and errors are those of a direct call."""
    serializer = shipped_serializer()
    with PacedBackend(tokens=3, interval=0.001) as backend:  # refuses non-streamed requests
        request = {"model": "m", "backend_url": backend.base_url,
                   "messages": [{"role": "user", "content": "go"}]}
        info = {"url": f"ws://127.0.0.1:{free_port()}", "channel": relay.new_channel(),
                "token": "t", "key": relay.new_key(), "open_timeout": 2,
                "batch_on_relay_error": True}
        results, seen = _run_on_worker(
            [(ping, ()), (batch_chat, (request,)), (stream_chat, (request, info))],
            serializer=serializer, pythonpath=str(node_site), work=tmp_path)
        direct = stream_chat(request, info)
    assert not seen["hpc_functions"] and not seen["stream_langchain"]
    assert unpack_result(results[0], serializer) == ping()
    with pytest.raises(RemoteTaskError, match="RuntimeError: backend returned HTTP 400"):
        unpack_result(results[1], serializer)
    fallback = unpack_result(results[2], serializer)
    assert fallback["mode"] == "batch" and fallback["error_kind"] == "backend"
    assert _steady([], fallback) == _steady([], direct)


# -- images through the HPC path (issue #16) ----------------------------------------------------
# No vision model installs here: the node's backend is tests/vision_backend.py, a real
# OpenAI-compatible HTTP server on loopback that records the image parts it receives and says
# what it saw (PNG size + SHA-256), standing in for Qwen2.5-VL behind vLLM.


@pytest.fixture(scope="module")
def vision() -> Iterator[Any]:
    from tests.vision_backend import VisionBackend

    with VisionBackend(model="Qwen2.5-VL-72B-Instruct") as vb:
        yield vb


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["stream", "batch"])
def test_an_image_crosses_globus_serialization_and_the_relay(
    process_engine: ProcessPoolEngine, hpc_relay: tuple[str, str], llama_server: LlamaServer,
    vision: Any, mode: str,
) -> None:
    """ChatStream sends a photo to the vision HPC tier (the text-only local tier is skipped):
    the request is packed as the SDK packs a task, run on a node-like worker process, the
    image is posted to the node's backend, and the answer comes back through the encrypted
    relay (or, in batch mode, as the task's result). The backend got the exact bytes."""
    from langchain_core.messages import HumanMessage
    from langchain_openai import ChatOpenAI

    from stream_langchain import ChatStream
    from tests.stream_langchain.conftest import FixedJudge
    from tests.vision_backend import describe_image_url, png_data_url

    vision.reset()
    hpc = ChatHPC(executor=EngineExecutor(process_engine), relay_url=hpc_relay[0],
                  relay_secret=hpc_relay[1], backend_url=vision.base_url,
                  model="Qwen2.5-VL-72B-Instruct", max_tokens=64, mode=mode,
                  profile={"image_inputs": True})
    local = ChatOpenAI(base_url=llama_server.base_url, api_key="unused",  # type: ignore[arg-type]
                       model="gemma-3-270m", extra_body={"max_tokens": 8},
                       profile={"image_inputs": False})
    llm = ChatStream(local=local, hpc=hpc, judge=FixedJudge("LOW"))
    image = png_data_url(7, 5)
    photo = HumanMessage(content=[{"type": "text", "text": "What is in this picture?"},
                                  {"type": "image_url", "image_url": {"url": image}}])
    chunks = list(llm.stream([photo]))
    text = "".join(str(c.content) for c in chunks)
    assert text == f"I see 1 image: {describe_image_url(image)}."
    assert vision.last_images == [image]
    rec = chunks[-1].response_metadata["stream"]
    assert rec["tier"] == "hpc" and rec["hpc_mode"] == mode
    assert {"tier": "local", "reason": "no image input: vision=False "
            "(profile: image_inputs=False)"} in rec["skipped"]
