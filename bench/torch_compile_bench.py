"""torch.compile on the generated modules (issue 17 part 3): part 5 of bench/run.py.

For GPT-2 small and the ~100M Llama, with identical weights: our module eager, our
module under `torch.compile(fullgraph=True, dynamic=True)` (inductor), and transformers'
model under `torch.compile(dynamic=True)` (transformers' own graph may break, so no
fullgraph). Compiled outputs are checked against eager before anything is timed; the
compile time (first call) is reported apart. Timings are interleaved in one process.

    .venv/bin/python bench/torch_compile_bench.py [--repeat N] [--shapes 1x256,8x256]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

import model_bench


def compiled_vs_eager(kind: str, repeat: int, tmp: str, rows, shapes=model_bench.SHAPES) -> None:
    import torch

    comp, mod, ours, hf = model_bench.hf_pair(kind, tmp)
    label = f"{comp.model.top} ({comp.model.param_count() / 1e6:.0f}M)"
    vocab = mod.CONFIG["vocab_size"]
    torch._dynamo.reset()
    ours_c = torch.compile(ours, fullgraph=True, dynamic=True)
    hf_c = torch.compile(hf, dynamic=True)
    for b, s in shapes:
        ids = torch.from_numpy(np.random.default_rng(0).integers(0, vocab, size=(b, s)))
        with torch.no_grad():  # not inference_mode: compiled graphs are meant for no_grad
            ref = ours(input_ids=ids)["logits"]
            t0 = time.perf_counter()
            got = ours_c(input_ids=ids)["logits"]
            t_ours = time.perf_counter() - t0
            t0 = time.perf_counter()
            got_hf = hf_c(input_ids=ids, use_cache=False).logits
            t_hf = time.perf_counter() - t0
            for name, g in (("ours compiled", got), ("transformers compiled", got_hf)):
                if not torch.all((g - ref).abs() <= 1e-5 + 1e-4 * ref.abs()):
                    raise SystemExit(f"{label}: {name} logits differ from eager by {float((g - ref).abs().max())}")
            del ref, got, got_hf
            t = model_bench.interleaved(
                {
                    "eager": lambda: ours(input_ids=ids),
                    "compiled": lambda: ours_c(input_ids=ids),
                    "hf_compiled": lambda: hf_c(input_ids=ids, use_cache=False),
                },
                repeat,
            )
        e, c, h = (model_bench.stats_ms(t[k]) for k in ("eager", "compiled", "hf_compiled"))
        speedup = statistics.median(a / b_ for a, b_ in zip(t["eager"], t["compiled"]))
        rows.append((
            "5 torch.compile", f"{label} {b}x{s}",
            f"eager {e[0]:.0f} / {e[1]:.0f} ms, compiled {c[0]:.0f} / {c[1]:.0f} ms, "
            f"HF compiled {h[0]:.0f} / {h[1]:.0f} ms (min / median); eager/compiled {speedup:.2f}x (pairwise median), "
            f"HF compiled/ours compiled {h[0] / c[0]:.2f}x (min); "
            f"first call (compile) ours {t_ours:.0f} s, HF {t_hf:.0f} s",
        ))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--shapes", default="1x256,8x256", help="BxS list (default 1x256,8x256)")
    ap.add_argument("--kinds", default="gpt2,llama")
    args = ap.parse_args()
    shapes = tuple(tuple(int(n) for n in s.split("x")) for s in args.shapes.split(","))
    rows = []
    tmp = model_bench.new_tmp()
    for kind in args.kinds.split(","):
        compiled_vs_eager(kind, args.repeat, tmp, rows, shapes)
        for row in rows[-len(shapes):]:
            print(" | ".join(row), file=sys.stderr)
    for row in rows:
        print(" | ".join(row))


if __name__ == "__main__":
    main()
