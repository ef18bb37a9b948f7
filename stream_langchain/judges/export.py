"""Write the fine-tuned encoder judge as one ONNX file that ONNX Runtime runs.

The training side (``scripts/judge_finetune_cv.py``) has a ``transformers`` BERT encoder and a
linear head; :func:`weights_from_torch` turns them into plain arrays and :func:`build_onnx`
writes the graph: the standard BERT encoder (embeddings, ``n_layers`` of self-attention and
GELU feed-forward, post-layer norms), a masked mean pool and the head, so that
``logits = head(mean(encoder(input_ids, attention_mask)))`` for a batch.

Matrices are stored as int8 with one scale per output column and widened by
``DequantizeLinear`` when the session is built (ONNX Runtime folds them into float weights
once); the word table stays int8 in memory and only the looked-up rows are widened. The file
also carries its tokenizer (Hugging Face ``tokenizers`` JSON: BERT's uncased WordPiece with
``[CLS] ... [SEP]`` and truncation) and the judge's calibration in its metadata, so one file is
the whole judge.

Needs the ``onnx`` package (the ``judge-train`` and ``test`` extras); the runtime side
(:mod:`stream_langchain.judges.transformer`) needs only ``onnxruntime`` and ``tokenizers``.

Example:
    >>> import numpy as np
    >>> from stream_langchain.judges.export import quantize_int8
    >>> q, s = quantize_int8(np.array([[1.0, -2.0], [0.5, 4.0]]))
    >>> q.dtype.name, q.tolist()
    ('int8', [[127, -64], [64, 127]])
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from stream_langchain.judges.embedded import WordPiece

__all__ = ["FORMAT", "build_onnx", "make_tokenizer", "quantize_int8", "weights_from_torch"]

FORMAT = "stream-encoder-judge/2"
"""Value of the ``format`` metadata key of a judge written here."""

OPSET = 17  # LayerNormalization is a standard op from 17 on


def quantize_int8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 with one float32 scale per column: ``w ~= q * scale``."""
    w = np.asarray(w, dtype=np.float32)
    scale = np.abs(w).max(axis=0) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


def make_tokenizer(vocab: Sequence[str], max_len: int) -> Any:
    """BERT's uncased WordPiece over ``vocab`` with ``[CLS] ... [SEP]``, truncated to ``max_len``
    (a ``tokenizers.Tokenizer``).

    Raises:
        ValueError: ``vocab`` lacks ``[UNK]``, ``[CLS]`` or ``[SEP]``.
    """
    return WordPiece(vocab, max_len=max_len).tokenizer


def weights_from_torch(encoder: Any, head: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays and shape facts of a ``transformers`` BertModel and a ``torch.nn.Linear`` head.

    Returns:
        ``(weights, config)``: ``weights`` keyed ``emb.word``, ``emb.pos``, ``emb.type``,
        ``emb.ln.g/b``, ``l{i}.{qkv,o,i,f}.{w,b}``, ``l{i}.ln{1,2}.{g,b}``, ``head.w/b``, with
        matrices as ``(in, out)``; ``config`` with ``n_layers``, ``n_heads`` and ``eps``.
    """
    sd = {k: v.detach().float().cpu().numpy() for k, v in encoder.state_dict().items()}
    cfg = encoder.config
    w: dict[str, np.ndarray] = {
        "emb.word": sd["embeddings.word_embeddings.weight"],
        "emb.pos": sd["embeddings.position_embeddings.weight"],
        "emb.type": sd["embeddings.token_type_embeddings.weight"],
        "emb.ln.g": sd["embeddings.LayerNorm.weight"],
        "emb.ln.b": sd["embeddings.LayerNorm.bias"],
        "head.w": head.weight.detach().float().cpu().numpy().T,
        "head.b": head.bias.detach().float().cpu().numpy(),
    }
    for i in range(cfg.num_hidden_layers):
        b, p = f"encoder.layer.{i}.", f"l{i}."
        att = [f"{b}attention.self.{n}" for n in ("query", "key", "value")]
        w[p + "qkv.w"] = np.concatenate([sd[a + ".weight"].T for a in att], axis=1)
        w[p + "qkv.b"] = np.concatenate([sd[a + ".bias"] for a in att])
        w[p + "o.w"] = sd[b + "attention.output.dense.weight"].T
        w[p + "o.b"] = sd[b + "attention.output.dense.bias"]
        w[p + "ln1.g"] = sd[b + "attention.output.LayerNorm.weight"]
        w[p + "ln1.b"] = sd[b + "attention.output.LayerNorm.bias"]
        w[p + "i.w"] = sd[b + "intermediate.dense.weight"].T
        w[p + "i.b"] = sd[b + "intermediate.dense.bias"]
        w[p + "f.w"] = sd[b + "output.dense.weight"].T
        w[p + "f.b"] = sd[b + "output.dense.bias"]
        w[p + "ln2.g"] = sd[b + "output.LayerNorm.weight"]
        w[p + "ln2.b"] = sd[b + "output.LayerNorm.bias"]
    weights = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in w.items()}
    config = {"n_layers": cfg.num_hidden_layers, "n_heads": cfg.num_attention_heads,
              "eps": float(cfg.layer_norm_eps)}
    return weights, config


class _Graph:
    """A small builder over ``onnx.helper``: nodes, initializers, fresh names."""

    def __init__(self) -> None:
        import onnx

        self.onnx = onnx
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, hint: str, value: np.ndarray) -> str:
        name = self.name(hint)
        self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], hint: str | None = None,
           outputs: int = 1, **attrs: Any) -> Any:
        outs = [self.name(hint or op_type.lower()) for _ in range(outputs)]
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), outs, **attrs))
        return outs[0] if outputs == 1 else outs

    def matrix(self, hint: str, w: np.ndarray) -> str:
        """An int8 matrix with per-column scales, widened by DequantizeLinear."""
        q, s = quantize_int8(w)
        return self.op("DequantizeLinear", [self.const(hint + "_q", q), self.const(hint + "_s", s),
                                            self.const(hint + "_z", np.zeros_like(s, np.int8))],
                       hint, axis=1)

    def linear(self, x: str, w: np.ndarray, b: np.ndarray, hint: str) -> str:
        return self.op("Add", [self.op("MatMul", [x, self.matrix(hint + "_w", w)]),
                               self.const(hint + "_b", b.astype(np.float32))])

    def layer_norm(self, x: str, g: np.ndarray, b: np.ndarray, eps: float, hint: str) -> str:
        return self.op("LayerNormalization", [x, self.const(hint + "_g", g.astype(np.float32)),
                                              self.const(hint + "_b", b.astype(np.float32))],
                       hint, axis=-1, epsilon=eps)


def build_onnx(weights: dict[str, np.ndarray], *, vocab: Sequence[str], n_layers: int,
               n_heads: int, eps: float, max_len: int, meta: dict[str, Any]) -> bytes:
    """The judge as ONNX bytes: inputs ``input_ids``/``attention_mask`` (int64, batch x
    sequence), output ``logits`` (float32, batch x 3); tokenizer and ``meta`` (calibration:
    ``temperature``, ``high_threshold``, provenance) in the model's metadata.

    Raises:
        ValueError: a weight is missing or its shape does not fit the others.
    """
    import onnx
    from onnx import TensorProto, helper

    need = ["emb.word", "emb.pos", "emb.type", "emb.ln.g", "emb.ln.b", "head.w", "head.b"]
    need += [f"l{i}.{k}" for i in range(n_layers) for k in
             ("qkv.w", "qkv.b", "o.w", "o.b", "ln1.g", "ln1.b", "i.w", "i.b", "f.w", "f.b",
              "ln2.g", "ln2.b")]
    missing = [k for k in need if k not in weights]
    if missing:
        raise ValueError(f"missing weights: {', '.join(missing[:5])}")
    d = weights["emb.word"].shape[1]
    if d % n_heads:
        raise ValueError(f"width {d} is not a multiple of {n_heads} heads")
    if weights["emb.pos"].shape[0] < max_len:
        raise ValueError(f"max_len {max_len} exceeds {weights['emb.pos'].shape[0]} positions")
    hd = d // n_heads
    g = _Graph()
    i64 = np.int64

    # embeddings: int8 word rows widened after the lookup, positions sliced to the length
    word_q, word_s = quantize_int8(weights["emb.word"])
    rows = g.op("Gather", [g.const("word_q", word_q), "input_ids"], axis=0)
    word = g.op("Mul", [g.op("Cast", [rows], to=TensorProto.FLOAT), g.const("word_s", word_s)])
    seq = g.op("Gather", [g.op("Shape", ["input_ids"]), g.const("one", np.array([1], i64))],
               axis=0)
    pos = g.op("Slice", [g.const("pos", weights["emb.pos"][:max_len].astype(np.float32)),
                         g.const("zero", np.array([0], i64)), seq,
                         g.const("axis0", np.array([0], i64))])
    x = g.op("Add", [g.op("Add", [word, pos]),
                     g.const("type0", weights["emb.type"][0].astype(np.float32))])
    x = g.layer_norm(x, weights["emb.ln.g"], weights["emb.ln.b"], eps, "emb_ln")

    # attention mask: 0 where attended, a large negative where padded; shape (B, 1, 1, S)
    mask = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    bias = g.op("Mul", [g.op("Sub", [g.const("f1", np.array(1.0, np.float32)), mask]),
                        g.const("neg", np.array(-1e9, np.float32))])
    bias = g.op("Unsqueeze", [bias, g.const("ax12", np.array([1, 2], i64))])

    heads_shape = g.const("heads", np.array([0, 0, n_heads, hd], i64))
    flat_shape = g.const("flat", np.array([0, 0, d], i64))
    inv_sqrt = g.const("scale", np.array(1.0 / math.sqrt(hd), np.float32))
    for i in range(n_layers):
        p = f"l{i}."
        qkv = g.linear(x, weights[p + "qkv.w"], weights[p + "qkv.b"], f"l{i}_qkv")
        q, k, v = g.op("Split", [qkv, g.const("split", np.array([d, d, d], i64))], outputs=3,
                       axis=-1)
        q = g.op("Transpose", [g.op("Reshape", [q, heads_shape])], perm=[0, 2, 1, 3])
        k = g.op("Transpose", [g.op("Reshape", [k, heads_shape])], perm=[0, 2, 3, 1])
        v = g.op("Transpose", [g.op("Reshape", [v, heads_shape])], perm=[0, 2, 1, 3])
        scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, k]), inv_sqrt]), bias])
        ctx = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
        ctx = g.op("Reshape", [g.op("Transpose", [ctx], perm=[0, 2, 1, 3]), flat_shape])
        att = g.linear(ctx, weights[p + "o.w"], weights[p + "o.b"], f"l{i}_o")
        x = g.layer_norm(g.op("Add", [att, x]), weights[p + "ln1.g"], weights[p + "ln1.b"],
                         eps, f"l{i}_ln1")
        h = g.linear(x, weights[p + "i.w"], weights[p + "i.b"], f"l{i}_i")
        erf = g.op("Erf", [g.op("Div", [h, g.const("sqrt2", np.array(math.sqrt(2.0),
                                                                    np.float32))])])
        h = g.op("Mul", [g.op("Mul", [h, g.op("Add", [erf, g.const("f1", np.array(
            1.0, np.float32))])]), g.const("half", np.array(0.5, np.float32))])
        f = g.linear(h, weights[p + "f.w"], weights[p + "f.b"], f"l{i}_f")
        x = g.layer_norm(g.op("Add", [f, x]), weights[p + "ln2.g"], weights[p + "ln2.b"], eps,
                         f"l{i}_ln2")

    # masked mean over the sequence, then the head (kept float: it is tiny)
    m3 = g.op("Unsqueeze", [mask, g.const("ax2", np.array([2], i64))])
    summed = g.op("ReduceSum", [g.op("Mul", [x, m3]), g.const("ax1", np.array([1], i64))],
                  keepdims=0)
    count = g.op("ReduceSum", [mask, g.const("ax1", np.array([1], i64))], keepdims=1)
    pooled = g.op("Div", [summed, count])
    logits = g.op("Add", [g.op("MatMul", [pooled, g.const("head_w", weights["head.w"].astype(
        np.float32))]), g.const("head_b", weights["head.b"].astype(np.float32))])
    g.nodes.append(helper.make_node("Identity", [logits], ["logits"]))

    graph = helper.make_graph(
        g.nodes, "stream_encoder_judge",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="stream-tiered")
    model.ir_version = 8  # readable by every onnxruntime >= 1.14
    full_meta = dict(meta, format=FORMAT, n_layers=n_layers, n_heads=n_heads, eps=eps,
                     max_len=max_len)
    tokenizer = make_tokenizer(vocab, max_len).to_str()
    helper.set_model_props(model, {"stream_meta": json.dumps(full_meta, sort_keys=True),
                                   "stream_tokenizer": tokenizer})
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())
