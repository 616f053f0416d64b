"""The fitter's design rules, each with the published design it comes from.

A rule is one decision a practitioner makes before sizing a model (the RoPE base for
the context, the parallel-friendly head counts, tied embeddings for a small model,
...). Each is declared here once, with its statement and source; the families apply
them while resolving conventions and fitting (`compiler/families/`), record each
application in the report (`params_estimate.json` `fit.rules`, printed by `metagen
explain`), and a value the spec pins that breaks a rule is kept with a located
warning naming the rule. docs/families.md's "Design rules" table is generated from
`RULES` (`python -m metagen.compiler.select`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from metagen.diagnostics import Loc


@dataclass(frozen=True)
class DesignRule:
    name: str
    families: str  # which families apply it, for the docs table
    statement: str
    source: str


RULES: dict[str, DesignRule] = {}


def _rule(name: str, families: str, statement: str, source: str) -> DesignRule:
    r = DesignRule(name, families, statement, source)
    RULES[name] = r
    return r


ROPE_BASE = _rule(
    "rope-base",
    "`decoder_lm`, `audio_lm`",
    "the RoPE base grows with the context window: 10,000 up to 4k tokens, 500,000 up to 8k, 1,000,000 up to 32k, "
    "10,000,000 beyond",
    "Llama 2 (4k: 10,000); Llama 3 (8k: 500,000); Qwen2-7B and Mistral 7B v0.2 (32k: 1,000,000); "
    "Qwen2.5-7B-Instruct-1M (1M: 10,000,000). Llama 3.1 instead keeps 500,000 and rescales frequencies for 128k, "
    "which the `rope` op does not express",
)
PARALLEL = _rule(
    "parallel-shapes",
    "`decoder_lm`, `audio_lm`",
    "heads and KV heads are multiples of the device's tensor-parallel degree (8 on `datacenter_gpu`, 1 elsewhere), "
    "the KV heads the fewest such multiple that leaves at most 16 query heads per group; the feed-forward width is a multiple of "
    "256 and of tensor-parallel degree x the device's tile (compiler/devices.py), so every shard is whole tiles",
    "Megatron-LM tensor parallelism (Shoeybi et al. 2019: heads and the FFN split across GPUs); Llama 2 70B and "
    "Llama 3 8B/70B/405B: 8 KV heads for 8-way TP (405B: 128 heads, groups of 16); Llama's multiple_of = 256; NVIDIA Matrix Multiplication "
    "Background guide: dimensions in multiples of 64 fp16 elements on A100 and later",
)
GQA = _rule(
    "grouped-query",
    "`decoder_lm`, `audio_lm`",
    "KV heads are a quarter of the query heads when the heads divide by 4 (at least 8 heads), else a third "
    "(at least 6); fewer heads keep multi-head attention",
    "Llama 3 8B and Mistral 7B (32 heads, 8 KV heads); MobileLLM-125M and SmolLM-135M (9 heads, 3 KV heads); "
    "MobileLLM-350M (15 heads, 5 KV heads)",
)
TIED = _rule(
    "tied-embeddings",
    "`decoder_lm`",
    "the LM head shares the token embedding when parameter_budget.max is at most 4B",
    "MobileLLM (Liu et al. 2024, embedding sharing: at 125M it saves about 16M parameters for a small accuracy loss); "
    "SmolLM-135M/360M/1.7B, "
    "Llama 3.2 1B and 3B, Qwen2-0.5B/1.5B are tied; Llama 2 7B, Llama 3 8B and Mistral 7B are not",
)
DEPTH_LM = _rule(
    "lm-depth",
    "`decoder_lm`, `audio_lm`",
    "among widths that fill the budget, the one whose depth is closest to the published depth for that width "
    "(log-log interpolation between 576: 30, 960: 32, 2048: 22, 4096: 32, 5120: 40, 8192: 80, 16384: 126 layers): "
    "deep and thin below 1B",
    "MobileLLM-125M and SmolLM-135M (576 wide, 30 layers); MobileLLM-350M and SmolLM-360M (960, 32); TinyLlama 1.1B "
    "(2048, 22); Llama 2 7B (4096, 32), 13B (5120, 40), 70B (8192, 80); Llama 3.1 405B (16384, 126)",
)
VOCAB = _rule(
    "vocab-shrink",
    "`decoder_lm`",
    "when the default 32,000-token embedding would take more than half of parameter_budget.max at a width, that "
    "width uses the largest power-of-two vocabulary (at least 256) whose embedding fits in half; widths that keep "
    "the default are preferred, and a warning names the size",
    "published small LMs keep the embedding at 15-31% of the model (MobileLLM-125M 15%, SmolLM-135M 21%, GPT-2 124M "
    "31%); llama2.c trains TinyStories models with 512- and 4096-token tokenizers",
)
DEPTH_TOWER = _rule(
    "tower-depth",
    "`vit`, `encoder`, `masked_lm`, `clip`, `fallback`",
    "among widths that fill the budget, the one whose depth is closest to ViT's for that width (12 layers up to 768 "
    "wide, then 1024: 24, 1280: 32, 1664: 48)",
    "ViT-Ti/S/B (192/384/768 wide, 12 layers), ViT-L (1024, 24), ViT-H (1280, 32) (Dosovitskiy et al. 2021, "
    "Table 1); ViT-G (1664, 48) (Zhai et al. 2022); BERT-base (768, 12) and BERT-large (1024, 24)",
)
CLIP_PATCH = _rule(
    "clip-patch",
    "`clip`",
    "the image tower's patch is 32 below 1024 wide and 14 from 1024 up (16 when 14 does not divide the image)",
    "OpenAI CLIP ViT-B/32 and ViT-B/16 (768 wide); ViT-L/14 (1024); OpenCLIP ViT-H/14 (1280) and ViT-bigG/14 (1664)",
)
UNET = _rule(
    "unet-scaling",
    "`diffusion_unet`",
    "two ResNet blocks per level; base channels as close to 320 as the budget allows, then the budget goes to "
    "transformer depth (more blocks per spatial transformer), not to wider channels",
    "SD 1.5 and SD 2 (320 base channels, 2 ResNet blocks per level, transformer depth 1, 860M U-Net); SDXL (320 "
    "base channels, 2 blocks per level, transformer depth up to 10, 2.6B U-Net; Podell et al. 2023, section 2.1)",
)

# ---------------------------------------------------------------- the rules as functions


def rope_base(context: int) -> float:
    for upto, base in ((4096, 10_000.0), (8192, 500_000.0), (32768, 1_000_000.0)):
        if context <= upto:
            return base
    return 10_000_000.0


def interpolate_depth(width: int, anchors: tuple[tuple[int, float], ...]) -> float:
    """Log-log interpolation between (width, layers) anchors, flat beyond the ends."""
    if width <= anchors[0][0]:
        return float(anchors[0][1])
    for (w0, l0), (w1, l1) in zip(anchors, anchors[1:]):
        if width <= w1:
            t = math.log(width / w0) / math.log(w1 / w0)
            return math.exp(math.log(l0) + t * (math.log(l1) - math.log(l0)))
    return float(anchors[-1][1])


LM_DEPTH_ANCHORS = ((576, 30), (960, 32), (2048, 22), (4096, 32), (5120, 40), (8192, 80), (16384, 126))
TOWER_DEPTH_ANCHORS = ((768, 12), (1024, 24), (1280, 32), (1664, 48))
TIE_UP_TO = 4_000_000_000
VOCAB_SHARE = 0.5
MIN_VOCAB = 256
UNET_BASE = 320
MAX_GROUP = 16


def lm_depth(width: int) -> float:
    return interpolate_depth(width, LM_DEPTH_ANCHORS)


def tower_depth(width: int) -> float:
    return interpolate_depth(width, TOWER_DEPTH_ANCHORS)


def shrunk_vocab(default: int, width: int, budget: int) -> int:
    """The vocabulary a width gets under `budget`: the default when its embedding
    fits in half the budget, else the largest power of two that does, and never
    fewer than 256 (byte-level) tokens, so a budget too small for any model is
    still diagnosed by the parameter bound, with the smallest model's size."""
    room = int(budget * VOCAB_SHARE) // width
    if default <= room:
        return default
    return max(MIN_VOCAB, 2 ** int(math.log2(max(room, 1))))


def kv_heads_for(heads: int, gqa: bool, tp: int = 1) -> int:
    """The KV heads for `heads` query heads (grouped-query and parallel-shapes rules)."""
    if tp > 1:
        for kv in range(tp, heads + 1, tp):
            if heads % kv == 0 and heads // kv <= MAX_GROUP:
                return kv if gqa else heads
        return heads
    if not gqa:
        return heads
    if heads % 4 == 0 and heads >= 8:
        return heads // 4
    if heads % 3 == 0 and heads >= 6:
        return heads // 3
    return heads


# ---------------------------------------------------------------- recording


def applied(ctx: Any, rule: DesignRule, what: str) -> None:
    """Record that `rule` set something (`what`), for params_estimate.json and explain."""
    entries = ctx.report.setdefault("rules", [])
    entry = {"rule": rule.name, "applied": what}
    if entry not in entries:
        entries.append(entry)


def pinned_breaks(ctx: Any, loc: Loc, rule: DesignRule, what: str) -> None:
    """A pinned value that breaks a rule: kept, with a warning at its line."""
    ctx.sink.warning(loc, f"{what}; kept because the spec pins it (design rule '{rule.name}', docs/families.md)")
    applied(ctx, rule, f"not applied: {what} (pinned)")


def rules_table() -> str:
    """docs/families.md's design-rules table."""
    lines = ["| rule | families | what the fitter does | source |", "| --- | --- | --- | --- |"]
    for r in RULES.values():
        lines.append(f"| `{r.name}` | {r.families} | {r.statement} | {r.source} |")
    return "\n".join(lines) + "\n"
