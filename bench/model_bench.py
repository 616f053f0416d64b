"""Speed of the generated models (issue 7, parts 1-3): helpers used by bench/run.py.

- part 1: the generated torch module against `transformers`' GPT2LMHeadModel /
  LlamaForCausalLM at the identical configuration with the identical weights (ours are
  loaded from the transformers model through the canonical names, and the logits are
  checked to agree before anything is timed);
- part 2: achieved GFLOP/s of the generated forward pass (FLOPs from the IR,
  compiler/cost.py) against a float32 2048^2 matmul measured in the same run;
- part 3: the jitted flax module's `run` against the torch module.

Every comparison is interleaved (A, B, A, B, ...) in one process so that the load of a
shared machine hits both sides alike; min and median are reported.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPT2 = os.path.join(ROOT, "examples", "reference", "gpt2_small.yaml")
LLAMA_100M = os.path.join(ROOT, "bench", "specs", "llama_100m.yaml")
SHAPES = ((1, 256), (8, 256))


def interleaved(fns: dict[str, callable], repeat: int, warmup: int = 2) -> dict[str, list[float]]:
    """Seconds per call of each fn, measured round-robin `repeat` times."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def stats_ms(ts: list[float]) -> tuple[float, float]:
    return min(ts) * 1e3, statistics.median(ts) * 1e3


def _tests_helpers():
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from conftest import load_module

    return load_module


def emit_module(comp, target: str, tmp: str):
    from metagen.artifacts import emit_target

    load_module = _tests_helpers()
    path = os.path.join(tmp, f"{comp.model.top}_{target}.py")
    with open(path, "wb") as f:
        f.write(emit_target(comp, target, 0)[""])
    return load_module(path)


def hf_pair(kind: str, tmp: str):
    """(compilation, generated module, our Model, the transformers model), identical weights."""
    import torch

    from metagen.hf import gpt2_to_canonical, llama_to_canonical
    from metagen.pipeline import compile_spec

    comp = compile_spec(GPT2 if kind == "gpt2" else LLAMA_100M)
    mod = emit_module(comp, "torch", tmp)
    c = mod.CONFIG
    torch.manual_seed(0)
    if kind == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        cfg = GPT2Config(
            vocab_size=c["vocab_size"], n_positions=c["context_window"], n_embd=c["hidden_size"],
            n_layer=c["layers"], n_head=c["heads"], n_inner=c["ffn_size"], activation_function="gelu_new",
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        )
        cfg._attn_implementation = "sdpa"
        hf = GPT2LMHeadModel(cfg).eval()
        canon = gpt2_to_canonical(hf.state_dict())
    else:
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(
            vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], intermediate_size=c["ffn_size"],
            num_hidden_layers=c["layers"], num_attention_heads=c["heads"], num_key_value_heads=c["kv_heads"],
            head_dim=c["head_dim"], rms_norm_eps=c["norm_eps"], rope_theta=c["rope_theta"],
            max_position_embeddings=c["context_window"], tie_word_embeddings=False,
        )
        cfg._attn_implementation = "sdpa"
        hf = LlamaForCausalLM(cfg).eval()
        canon = llama_to_canonical(hf.state_dict())
    ours = mod.load_canonical(canon)
    return comp, mod, ours, hf


def torch_vs_hf(kind: str, repeat: int, tmp: str, rows, peak_rows) -> None:
    """Parts 1 and 2 from one interleaved loop: ours, transformers', a 2048^2 matmul."""
    import torch

    from metagen.compiler.cost import model_flops

    comp, mod, ours, hf = hf_pair(kind, tmp)
    label = f"{comp.model.top} ({comp.model.param_count() / 1e6:.0f}M)"
    vocab = mod.CONFIG["vocab_size"]
    ma, mb_ = torch.randn(2048, 2048), torch.randn(2048, 2048)
    mm_flops = 2 * 2048**3
    for b, s in SHAPES:
        ids = torch.from_numpy(np.random.default_rng(0).integers(0, vocab, size=(b, s)))
        with torch.inference_mode():
            # Both without a KV cache: transformers' use_cache=False, ours the same switch.
            a, r = ours(input_ids=ids, use_cache=False)["logits"], hf(input_ids=ids, use_cache=False).logits
            if not torch.all((a - r).abs() <= 1e-5 + 1e-4 * r.abs()):
                raise SystemExit(f"{label}: generated logits differ from transformers' by {float((a - r).abs().max())}")
            del a, r
            t = interleaved(
                {
                    "ours": lambda: ours(input_ids=ids, use_cache=False),
                    "hf": lambda: hf(input_ids=ids, use_cache=False),
                    "mm": lambda: torch.mm(ma, mb_),
                },
                repeat,
            )
        (o_min, o_med), (h_min, h_med) = stats_ms(t["ours"]), stats_ms(t["hf"])
        pairwise = statistics.median(h / o for h, o in zip(t["hf"], t["ours"]))
        rows.append((
            "1 torch vs HF", f"{label} {b}x{s}",
            f"ours {o_min:.0f} / {o_med:.0f} ms, HF {h_min:.0f} / {h_med:.0f} ms (min / median); "
            f"HF/ours {h_min / o_min:.2f}x (min), {h_med / o_med:.2f}x (median), {pairwise:.2f}x (pairwise median)",
        ))
        flops = model_flops(comp.model, {"batch": b, "seq": s, "past": 0})  # no KV cache: a plain forward
        fwd = flops / min(t["ours"]) / 1e9, flops / statistics.median(t["ours"]) / 1e9
        mm = mm_flops / min(t["mm"]) / 1e9, mm_flops / statistics.median(t["mm"]) / 1e9
        peak_rows.append((
            "2 GFLOP/s", f"{comp.model.top} {b}x{s} forward ({flops / 1e9:.0f} GFLOP from the IR)",
            f"{fwd[0]:.0f} / {fwd[1]:.0f} GFLOP/s vs matmul 2048^2 {mm[0]:.0f} / {mm[1]:.0f} (best / median): "
            f"{100 * fwd[0] / mm[0]:.0f}% of peak (best/best), {100 * fwd[1] / mm[1]:.0f}% (median/median)",
        ))


def flax_vs_torch(repeat: int, tmp: str, rows) -> None:
    from metagen.pipeline import compile_spec

    for spec in (GPT2, LLAMA_100M):
        comp = compile_spec(spec)
        tmod = emit_module(comp, "torch", tmp)
        fmod = emit_module(comp, "flax", tmp)
        tstate, fstate = tmod.init(0), fmod.init(0)
        vocab = tmod.CONFIG["vocab_size"]
        for b, s in SHAPES:
            feed = {"input_ids": np.random.default_rng(0).integers(0, vocab, size=(b, s)).astype(np.int64)}
            # `run` on both sides: numpy in, numpy out, so conversions count alike.
            ref = tmod.run(tstate, feed)["logits"]
            np.testing.assert_allclose(fmod.run(fstate, feed)["logits"], ref, rtol=1e-4, atol=1e-4)
            t = interleaved({"flax": lambda: fmod.run(fstate, feed), "torch": lambda: tmod.run(tstate, feed)}, repeat)
            (f_min, f_med), (t_min, t_med) = stats_ms(t["flax"]), stats_ms(t["torch"])
            pairwise = statistics.median(f / t_ for f, t_ in zip(t["flax"], t["torch"]))
            rows.append((
                "3 flax vs torch", f"{comp.model.top} {b}x{s}",
                f"flax (jit) {f_min:.0f} / {f_med:.0f} ms, torch {t_min:.0f} / {t_med:.0f} ms (min / median); "
                f"flax time / torch time {f_min / t_min:.2f}x (min), {f_med / t_med:.2f}x (median), "
                f"{pairwise:.2f}x (pairwise median)",
            ))
        del tstate, fstate


def new_tmp() -> str:
    return tempfile.mkdtemp(prefix="mg_bench_")
