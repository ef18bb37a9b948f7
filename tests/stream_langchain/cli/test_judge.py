"""``stream judge`` and ``stream bench judge``, plus the metrics behind the report."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from stream_langchain import cli
from stream_langchain.cli.judge import main, register
from stream_langchain.judges.evaluate import LABELS, default_dataset, load_queries, metrics

REPO = Path(__file__).resolve().parents[3]
DATA = REPO / "stream_langchain" / "judges" / "data" / "stream_balanced_test.jsonl"
SHARED = REPO.parent / "shared" / "data" / "stream_balanced_test.jsonl"


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def small_set(tmp_path: Path) -> Path:
    """45 labelled queries, 15 per label, from the packaged benchmark copy."""
    rows = load_queries(DATA, require_labels=True)
    pick = [r for lbl in LABELS for r in [x for x in rows if x["ground_truth"] == lbl][:15]]
    return write_jsonl(tmp_path / "small.jsonl",
                       [{"text": r["text"], "ground_truth": r["ground_truth"]} for r in pick])


# --------------------------------------------------------------------------- stream judge


def test_register_adds_judge_and_bench_judge_to_any_parser() -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["judge", "hi", "--json"])
    assert args.question == "hi" and args.json and callable(args.func)
    args = parser.parse_args(["bench", "judge", "x.jsonl", "--judge", "keyword", "--folds", "3"])
    assert (args.path, args.judge, args.folds) == ("x.jsonl", ["keyword"], 3)


def test_stream_cli_exposes_the_judge_commands() -> None:
    args = cli.build_parser().parse_args(["bench", "judge", "--limit", "10"])
    assert args.limit == 10 and callable(args.func)


def test_judge_file_prints_one_json_object_per_line(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    src = write_jsonl(tmp_path / "q.jsonl", [{"text": "What is 2 + 2?"},
                                             {"text": "Prove Fermat's little theorem."},
                                             {"text": "What is 2 + 2?", "extra": 1}])
    assert main(["judge", "--file", str(src), "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    recs = [json.loads(x) for x in lines]
    for rec in recs:
        assert {"text", "complexity", "confidence", "judge", "ms"} <= set(rec)
        assert rec["complexity"] in LABELS and 0.0 <= rec["confidence"] <= 1.0
        # the default judge: embedded, or the transformer it asks when unsure
        assert rec["judge"] in ("embedded", "transformer")
    assert recs[0]["complexity"] == recs[2]["complexity"]
    assert recs[1]["text"] == "Prove Fermat's little theorem."


def test_judge_one_question_plain_and_keyword(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["judge", "--judge", "keyword", "Prove it step by step."]) == 0
    out = capsys.readouterr().out
    assert out.startswith("HIGH") and "keyword" in out


def test_judge_needs_exactly_one_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one question or --file"):
        main(["judge"])
    with pytest.raises(ValueError, match="one question or --file"):
        main(["judge", "q", "--file", str(tmp_path / "x.jsonl")])


def test_bad_jsonl_line_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"txt": "oops"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        main(["judge", "--file", str(bad), "--json"])
    bad.write_text('{"text": "a", "ground_truth": "EASY"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="EASY"):
        load_queries(bad)


def test_cli_subprocess_outputs_valid_jsonl(tmp_path: Path) -> None:
    """``python -m stream_langchain.cli.judge judge --file ... --json`` as a user runs it."""
    src = write_jsonl(tmp_path / "q.jsonl", [{"text": "hello"}, {"text": "Design a compiler."}])
    proc = subprocess.run([sys.executable, "-m", "stream_langchain.cli.judge", "judge", "--file",
                           str(src), "--json"], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(x)["text"] for x in proc.stdout.splitlines()] == ["hello",
                                                                         "Design a compiler."]


# --------------------------------------------------------------------------- stream bench judge


def test_bench_on_a_slice_writes_json_and_pngs(small_set: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    assert main(["bench", "judge", str(small_set), "--judge", "embedded", "--judge", "keyword",
                 "--folds", "2", "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "judge_report.json").read_text())
    assert report["n"] == 45 and report["folds"] == 2
    emb, kw = report["judges"]["embedded"], report["judges"]["keyword"]
    assert "cross-validation" in emb["protocol"] and "other 1 folds" in emb["protocol"]
    assert "no training" in kw["protocol"]
    for m in (emb, kw):
        assert 0.0 <= m["accuracy"] <= 1.0 and 0.0 <= m["free_tier_retention"] <= 1.0
        assert sum(map(sum, m["confusion"]["rows_true_cols_pred"])) == 45
        assert {"p50", "p95"} <= set(m["latency_ms"])
        assert set(m["per_class"]) == set(LABELS)
    assert len(emb["fold_high_thresholds"]) == 2
    for name in ("embedded", "keyword"):
        assert (out / f"confusion_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "embedded: accuracy" in capsys.readouterr().out


def test_bench_flags_the_shipped_artifact_on_its_training_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r"
    assert main(["bench", "judge", str(DATA), "--judge", "embedded-shipped", "--limit", "30",
                 "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "judge_report.json").read_text())
    assert "TRAINED ON THIS FILE" in report["judges"]["embedded-shipped"]["protocol"]


def test_bench_scores_the_transformer_and_default_judges_as_shipped(
    small_set: Path, tmp_path: Path
) -> None:
    out = tmp_path / "r"
    assert main(["bench", "judge", str(DATA), "--judge", "transformer", "--judge", "auto",
                 "--limit", "20", "--out", str(out), "--no-progress"]) == 0
    judges = json.loads((out / "judge_report.json").read_text())["judges"]
    for name in ("transformer", "auto"):
        assert "TRAINED ON THIS FILE" in judges[name]["protocol"]
        assert sum(map(sum, judges[name]["confusion"]["rows_true_cols_pred"])) == 20
    # a file the artifacts never saw is not flagged
    assert main(["bench", "judge", str(small_set), "--judge", "transformer", "--out",
                 str(tmp_path / "s"), "--no-progress"]) == 0
    other = json.loads((tmp_path / "s" / "judge_report.json").read_text())["judges"]
    assert "not trained on this file" in other["transformer"]["protocol"]


def test_default_dataset_prefers_shared_then_packaged_copy() -> None:
    expected = SHARED if SHARED.is_file() else DATA
    assert default_dataset() == expected
    if not SHARED.is_file():
        print("../shared/data absent: the packaged copy is the default")


# --------------------------------------------------------------------------- metrics


def test_metrics_retention_counts_only_non_high_escalations() -> None:
    truth = ["LOW", "LOW", "MEDIUM", "MEDIUM", "HIGH", "HIGH"]
    pred = ["LOW", "HIGH", "MEDIUM", "LOW", "LOW", "HIGH"]
    m = metrics(truth, pred, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    assert m["free_tier_retention"] == 0.75  # 1 of 4 non-HIGH escalated
    assert m["high_recall"] == 0.5 and m["accuracy"] == 0.5
    assert m["confusion"]["rows_true_cols_pred"] == [[1, 0, 1], [1, 1, 0], [1, 0, 1]]
    assert m["per_class"]["LOW"]["precision"] == pytest.approx(1 / 3, abs=1e-4)
    assert m["latency_ms"]["p50"] == 3.5
    with pytest.raises(ValueError, match="differ in length"):
        metrics(["LOW"], [])
