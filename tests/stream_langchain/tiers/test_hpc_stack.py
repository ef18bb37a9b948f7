"""EmbeddedHPC: the whole dual-channel path on one machine, and its cleanup."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from stream_langchain.tiers.hpc_stack import EmbeddedHPC
from stream_langchain.tiers.llama_server import LlamaServer

REPO = Path(__file__).resolve().parents[3]


def _alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _wait_gone(pids: list[int], timeout: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def test_not_started_parts_raise_clear_errors() -> None:
    """Using the stack before start() is an error that says so."""
    stack = EmbeddedHPC()
    with pytest.raises(RuntimeError, match="not started"):
        _ = stack.chat_model
    with pytest.raises(ValueError, match="workers"):
        EmbeddedHPC(workers=0)


@pytest.mark.slow
def test_embedded_stack_streams_and_close_reaps_everything(llama_server: LlamaServer) -> None:
    """The stack answers through relay + process pool, and close() leaves no child alive."""
    with EmbeddedHPC(max_tokens=8, workers=1, server=llama_server) as stack:
        pids = stack.child_pids()
        assert len(pids) == 1  # the pool worker (the shared server is not ours)
        chunks = list(stack.chat_model.stream("Say hello."))
        assert sum(1 for c in chunks if c.content) >= 1
        meta = [c.response_metadata for c in chunks if c.response_metadata.get("hpc_mode")]
        assert meta[-1]["hpc_mode"] == "stream"
        assert stack.relay_url.startswith("ws://127.0.0.1:")
    assert _wait_gone(pids) == []
    assert llama_server.running  # a server passed in is left alone
    with pytest.raises(RuntimeError, match="not started"):
        _ = stack.chat_model


_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from stream_langchain.tiers.hpc_stack import EmbeddedHPC

    stack = EmbeddedHPC(max_tokens=2000, workers=1, n_threads=1).start()
    print(json.dumps(stack.child_pids()), flush=True)
    for chunk in stack.chat_model.stream("Tell a very long story about a dragon."):
        if chunk.content:
            print("TOKEN", flush=True)
    """
)


_OWNER_SCRIPT = textwrap.dedent(
    """
    import json, sys, threading, time
    from stream_langchain.tiers.hpc_stack import EmbeddedHPC

    stacks = []
    def start():
        stacks.append(EmbeddedHPC(max_tokens=8, workers=2, n_threads=1).start())
    if sys.argv[1] == "thread":  # no PDEATHSIG then: only the parent watch can help
        t = threading.Thread(target=start); t.start(); t.join()
    else:
        start()
    print(json.dumps(stacks[0].child_pids()), flush=True)
    time.sleep(600)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("started_from", ["main", "thread"])
def test_owner_killed_with_sigkill_leaves_no_process_behind(started_from: str) -> None:
    """SIGKILL to the owner alone (no cleanup runs): server and pool workers exit within 5 s."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _OWNER_SCRIPT, started_from],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        pids = json.loads(proc.stdout.readline())
        assert len(pids) == 3  # llama server + two pool workers
        assert all(_alive(p) for p in pids)
        proc.kill()
        proc.wait(timeout=30)
        left = _wait_gone(pids, timeout=5.0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for pid in left:  # do not leave them to the next test
        os.kill(pid, signal.SIGKILL)
    assert left == [], "children outlived an owner killed with SIGKILL"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_mid_stream_leaves_no_process_behind(sig: signal.Signals) -> None:
    """Ctrl-C (SIGINT to the process group) or SIGTERM mid-answer: every child exits too."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group, like a shell job
    )
    try:
        assert proc.stdout is not None
        pids = json.loads(proc.stdout.readline())
        assert len(pids) == 2  # llama server + one pool worker
        assert proc.stdout.readline().strip() == "TOKEN"  # mid-stream now
        if sig == signal.SIGINT:
            os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        else:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert _wait_gone(pids) == [], "children outlived the program"
