"""The README's Measured block is generated from the results files and must match them."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from benchmarks import report
from benchmarks._common import ROOT, Row, add_run_args, results_dir, write_results


def test_readme_matches_the_results_files() -> None:
    """`python -m benchmarks.report --check` passes: no figure drifted from its file."""
    assert report.main(["--check"]) == 0


def test_check_fails_when_a_figure_in_the_readme_drifts(tmp_path: Path) -> None:
    """Editing one figure by hand in the block makes the check fail; regenerating mends it."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text[text.index(report.BEGIN):text.index(report.END)]
    first_row = next(line for line in block.splitlines() if line.startswith("| ") and
                     any(ch.isdigit() for ch in line) and "claim" not in line)
    digit = next(ch for ch in first_row if ch.isdigit())
    drifted = first_row.replace(digit, str((int(digit) + 1) % 10), 1)
    assert drifted != first_row
    readme = tmp_path / "README.md"
    readme.write_text(text.replace(first_row, drifted), encoding="utf-8")
    assert report.main(["--check", "--readme", str(readme)]) == 1
    assert report.main(["--readme", str(readme)]) == 0
    assert readme.read_text(encoding="utf-8") == text


def test_every_row_names_its_command_and_its_files() -> None:
    """Each row has a command and existing results files, each with its provenance shown."""
    rows = report.rows()
    assert rows
    for row in rows:
        assert isinstance(row, Row)
        assert row.reproduce.strip() and row.figure.strip()
        assert row.sources and all(p.is_file() for p in row.sources)
    block = report.render(rows)
    for row in rows:
        for path in row.sources:
            assert path.relative_to(ROOT / "benchmarks").as_posix() in block


def test_write_results_records_the_machine_and_the_command(tmp_path: Path) -> None:
    """The meta block has commit, CPU flags, cores, load before and after, date, command."""
    path = write_results(tmp_path / "sub" / "r.json", {"x": 1, "meta": "replaced"})
    data = json.loads(path.read_text())
    meta = data["meta"]
    assert data["x"] == 1
    assert set(meta) >= {"commit", "dirty", "cpu", "load_before", "load_after", "date_utc",
                         "started_utc", "command"}
    assert meta["cpu"]["cores"] == os.cpu_count()
    assert isinstance(meta["cpu"]["flags"], list)
    assert len(meta["load_before"]) == len(meta["load_after"]) == 3
    assert meta["command"].startswith("python")
    assert json.loads(write_results(tmp_path / "c.json", {}, command="x y").read_text())[
        "meta"]["command"] == "x y"


def test_quick_runs_never_write_to_the_committed_results(tmp_path: Path) -> None:
    """--quick without --out goes to a fresh temp dir; --out wins; a full run uses the default."""
    committed = tmp_path / "results"
    parse = add_run_args(argparse.ArgumentParser()).parse_args
    quick = results_dir(parse(["--quick"]), committed)
    assert quick != committed and quick.is_dir() and not committed.exists()
    assert results_dir(parse(["--quick", "--out", str(tmp_path / "o")]), committed) == \
        tmp_path / "o"
    assert results_dir(parse([]), committed) == committed


def test_a_results_file_without_meta_says_so(tmp_path: Path) -> None:
    """Old files render as such instead of failing or pretending."""
    old = tmp_path / "old.json"
    old.write_text("{}")
    assert "no meta" in report.provenance(old)


@pytest.mark.parametrize("name", report.PACKAGES)
def test_each_benchmark_takes_quick_and_out(name: str) -> None:
    """Every benchmark in the runner parses the shared --quick/--out flags (CI runs them)."""
    from benchmarks.__main__ import STEPS, _takes_quick

    argv = next(step for n, step, _ in STEPS if n == name)
    if name == "summarize" and not _takes_quick(argv):
        pytest.xfail("benchmarks/summarize (issue 22's owner) has no --quick yet")
    assert _takes_quick(argv)
