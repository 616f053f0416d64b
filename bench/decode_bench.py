"""Decode speed (not a test): the generated torch module's `generate` against
transformers' `generate` on the same GPT-2 small weights, greedy, and the same loop
over our decode-form ONNX graph in onnxruntime. Prints a table; tokens must agree.

    .venv/bin/python bench/decode_bench.py [--batch 1 8] [--prompt 128] [--new 128] [--no-onnx]

Weights: transformers' GPT2LMHeadModel(GPT2Config()) initialised with seed 0 (the
GPT-2 small shape, 124M parameters; no download), mapped to canonical names with
metagen.hf.gpt2_to_canonical. tokens/s counts new tokens of every row. transformers
and ours run interleaved (A, B, A, B ...) --repeat times after one warm-up each, so
both see the same load; tokens/s is from the best run, the ratio is given from the
minima and the medians. onnxruntime: the best of --repeat runs after the others.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
GPT2 = os.path.join(ROOT, "examples", "reference", "gpt2_small.yaml")


def interleaved(fns: dict, repeat: int) -> tuple[dict, dict]:
    """Seconds of each run of each fn, round-robin after one warm-up; the last outputs."""
    outs = {k: fn() for k, fn in fns.items()}  # warm-up
    times = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            outs[k] = fn()
            times[k].append(time.perf_counter() - t0)
    return times, outs


def main() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    from conftest import compile_to, load_module
    from metagen.hf import gpt2_to_canonical

    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--no-onnx", action="store_true")
    args = p.parse_args()

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config()).eval()
    hf.generation_config.eos_token_id = None  # always args.new tokens
    hf.generation_config.pad_token_id = 0
    weights = gpt2_to_canonical(hf.state_dict())
    with tempfile.TemporaryDirectory() as tmp:
        from pathlib import Path

        path, comp = compile_to(Path(tmp), GPT2, "torch", tiny=False)
        mod = load_module(str(path))
    state = mod.load_canonical(weights)
    session = None
    if not args.no_onnx:
        import onnxruntime as ort

        from metagen.backends.onnx_backend import lower_to_onnx

        session = ort.InferenceSession(lower_to_onnx(comp.model, weights)[""], providers=["CPUExecutionProvider"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; prompt {args.prompt}, {args.new} new tokens, greedy")
    print("| batch | transformers tok/s | ours (torch) tok/s | ratio (min) | ratio (median) | onnxruntime tok/s | tokens agree |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for batch in args.batch:
        ids = np.random.default_rng(batch).integers(0, 50257, (batch, args.prompt))
        times, outs = interleaved(
            {
                "hf": lambda: hf.generate(
                    torch.from_numpy(ids), attention_mask=torch.ones(ids.shape, dtype=torch.long),
                    max_new_tokens=args.new, min_new_tokens=args.new, do_sample=False,
                ).numpy(),
                "ours": lambda: mod.generate(state, ids, max_new_tokens=args.new),
            },
            args.repeat,
        )
        ref = outs["hf"]
        agree = np.array_equal(outs["ours"], ref)
        onnx_col = "-"
        if session is not None:
            from metagen.generate import onnx_generate

            t, got = interleaved({"onnx": lambda: onnx_generate(session, comp.model, ids, max_new_tokens=args.new)}, 1)
            onnx_col = f"{batch * args.new / min(t['onnx']):.1f}"
            agree = agree and np.array_equal(got["onnx"], ref)
        n = batch * args.new
        hf_t, ours_t = times["hf"], times["ours"]
        print(
            f"| {batch} | {n / min(hf_t):.1f} | {n / min(ours_t):.1f} | {min(hf_t) / min(ours_t):.2f}x | "
            f"{statistics.median(hf_t) / statistics.median(ours_t):.2f}x | {onnx_col} | {agree} |",
            flush=True,
        )
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

if __name__ == "__main__":
    main()
