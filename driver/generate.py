"""Text generation outside the generated modules: the onnxruntime decoding loop and
`metagen generate`.

The loop itself is the one the generated modules embed (`pyemit.GENERATE_FUNCTIONS`,
token choice and randomness in numpy), run here over an onnxruntime session of the
decode-form graph: the same tokens as the torch, flax and numpy `generate` for the
same weights and seed. Families whose models have a KV cache generate; the others get
an error naming those that do.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Callable

import numpy as np

from metagen.backends.pyemit import GENERATE_FUNCTIONS, decode_table
from metagen.diagnostics import CompileError, Diagnostic, Loc
from metagen.ir.graph import Model
from metagen.verify import load_generated

BACKENDS = ("torch", "flax", "onnx")


def generating_families() -> list[str]:
    """The families whose models have a decode form (a KV cache), catalogue order."""
    from metagen.compiler.families import FAMILIES

    return [name for name, fam in FAMILIES.items() if getattr(fam, "generates", False)]


def _loop(model: Model) -> Callable[..., np.ndarray]:
    """`_generate` of the shared decoding loop, bound to this model's input names."""
    ns: dict[str, Any] = {"np": np, "_DECODE": decode_table(model)}
    exec(GENERATE_FUNCTIONS, ns)
    return ns["_generate"]


def complete_inputs(model: Model, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`feed` with the optional inputs it lacks filled in as the generated modules
    default them (empty caches, a mask of ones, positions from the mask): what an
    ONNX session, which has no optional inputs, needs for a plain forward."""
    out = dict(feed)
    first = next((spec for spec in model.inputs if spec.kind == "tokens"), model.inputs[0])  # as pyemit's defaults
    tokens = np.asarray(feed[first.name])
    batch, seq = tokens.shape[0], tokens.shape[-1]
    past = 0
    for spec in model.inputs:
        if spec.kind == "cache":
            if spec.name not in out:
                out[spec.name] = np.zeros((batch, spec.type.shape[1], 0, spec.type.shape[3]), np.float32)
            past = out[spec.name].shape[2]
    mask = None
    for spec in model.inputs:
        if spec.kind == "mask":
            if spec.name not in out:
                out[spec.name] = np.ones((batch, past + seq), np.int64)
            mask = out[spec.name]
    for spec in model.inputs:
        if spec.kind == "positions" and spec.name not in out:
            out[spec.name] = np.where(mask == 0, 0, np.cumsum(mask, axis=-1) - 1)[:, -seq:].astype(np.int64)
    return out


def onnx_generate(session, model: Model, input_ids, attention_mask=None, max_new_tokens=32, do_sample=False,
                  temperature=1.0, top_k=0, top_p=1.0, eos_token_id=None, pad_token_id=None, seed=0) -> np.ndarray:
    """The generated modules' `generate` over an onnxruntime session of `model`'s
    decode-form graph, the cache kept as the session's numpy outputs."""
    table = decode_table(model)
    if table is None:
        raise ValueError(f"{model.family} has no decode form")
    outputs = [o.name for o in session.get_outputs()]

    def step(feed, cache):
        full = complete_inputs(model, {**feed, **(cache or {})})
        named = dict(zip(outputs, session.run(None, full)))
        return named[table["logits"]][..., -1, :], {past: named[present] for past, present in table["cache"]}

    return _loop(model)(step, input_ids, attention_mask, max_new_tokens, do_sample, temperature, top_k, top_p,
                        eos_token_id, pad_token_id, seed)


def genai_config(model: Model, filename: str = "model.onnx") -> dict | None:
    """onnxruntime-genai's `genai_config.json` for the decode-form ONNX graph (model
    type "decoder": the input and output names, heads, head size, layers, context
    length, greedy search defaults); None for a model without a KV cache. bos/eos
    follow the reference conventions of `metagen export hf` until the model has a
    tokenizer."""
    from metagen.hf_export import special_tokens

    table = decode_table(model)
    if table is None:
        return None
    c = model.config
    past = table["cache"]
    bos, eos = special_tokens(dict(c, vocab_size=int(model.inputs[0].high)))
    context = int(c["context_window"])
    return {
        "model": {
            "bos_token_id": bos,
            "context_length": context,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": filename,
                "head_size": c["head_dim"],
                "hidden_size": c["hidden_size"],
                "inputs": {
                    "input_ids": table["tokens"],
                    "attention_mask": table["mask"],
                    "position_ids": table["positions"],
                    "past_key_names": past[0][0].replace(".0.", ".%d."),
                    "past_value_names": past[1][0].replace(".0.", ".%d."),
                },
                "outputs": {
                    "logits": table["logits"],
                    "present_key_names": past[0][1].replace(".0.", ".%d."),
                    "present_value_names": past[1][1].replace(".0.", ".%d."),
                },
                "num_attention_heads": c["heads"],
                "num_hidden_layers": c["layers"],
                "num_key_value_heads": c["kv_heads"],
            },
            "eos_token_id": eos,
            "pad_token_id": eos,
            "type": "decoder",
            "vocab_size": int(model.inputs[0].high),
        },
        "search": {
            "diversity_penalty": 0.0,
            "do_sample": False,
            "early_stopping": True,
            "length_penalty": 1.0,
            "max_length": context,
            "min_length": 0,
            "no_repeat_ngram_size": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            "past_present_share_buffer": False,
            "repetition_penalty": 1.0,
            "temperature": 1.0,
            "top_k": 1,
            "top_p": 1.0,
        },
    }


# ----------------------------------------------------------------- metagen generate


def generate_tokens(comp, backend: str, prompt: np.ndarray, weights: dict | None, seed: int, **options) -> np.ndarray:
    """Compile `comp` for `backend`, load `weights` (init(seed)'s when None) and run
    its generate on `prompt`."""
    from metagen.artifacts import emit_target

    model = comp.model
    if backend == "onnx":
        import onnxruntime as ort

        files = emit_target(comp, "onnx", seed=seed, weights=weights)
        if len(files) > 1:
            raise CompileError([Diagnostic("error", model.loc or Loc("<model>"), "the model is too large for an in-memory ONNX session")])
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        session = ort.InferenceSession(files[""], opts, providers=["CPUExecutionProvider"])
        return onnx_generate(session, model, prompt, seed=options.pop("sample_seed"), **options)
    with tempfile.TemporaryDirectory(prefix="metagen-generate-") as tmp:
        path = os.path.join(tmp, "model.py")
        with open(path, "wb") as f:
            f.write(emit_target(comp, backend, seed=seed)[""])
        mod = load_generated(path)
        state = mod.load_canonical(weights) if weights is not None else mod.init(seed)
        return np.asarray(mod.generate(state, prompt, seed=options.pop("sample_seed"), **options))
