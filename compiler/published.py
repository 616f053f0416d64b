"""Published designs next to MetaGen's fit at the same budget and context.

Each row compiles a spec under bench/specs/published/ (the published model's
parameter budget, context window and device; only the tokenizer's vocabulary
pinned) and sets the design the fitter chose beside the published configuration.
docs/families.md's "Published designs vs MetaGen's fit" table is generated from
`PUBLISHED` (`python -m metagen.compiler.select < docs/families.md`), and
tests/test_family_layer.py keeps it current: a change to the fitter that moves a
row fails that test until the table, and the explanation of the difference, are
regenerated and reread.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECS = os.path.join("bench", "specs", "published")


@dataclass(frozen=True)
class Published:
    model: str
    spec: str  # under bench/specs/published/
    design: str  # the published configuration, in the table's words
    source: str
    differences: str  # why MetaGen's fit differs (or that it does not)


PUBLISHED: list[Published] = [
    Published(
        "GPT-2 124M", "gpt2_124m.yaml",
        "768 wide, 12 layers, 12 heads (MHA), ffn 3072 (GELU), learned positions, tied; 124M",
        "Radford et al. 2019; HF `gpt2` config",
        "Deep and thin (rule lm-depth: MobileLLM found 30 layers beat 12 at this size) with the modern "
        "conventions (SwiGLU, RoPE, grouped-query attention); tied, as GPT-2.",
    ),
    Published(
        "MobileLLM-125M (edge)", "mobilellm_125m.yaml",
        "576 wide, 30 layers, 9 heads / 3 KV heads, ffn 1536 (SwiGLU), tied; 125M",
        "Liu et al. 2024 (MobileLLM); HF `facebook/MobileLLM-125M` config",
        "The same shape: width, depth, heads, KV heads, FFN width and tying all match.",
    ),
    Published(
        "TinyLlama 1.1B", "tinyllama_1b.yaml",
        "2048 wide, 22 layers, 32 heads / 4 KV heads, ffn 5632, untied; 1.1B",
        "Zhang et al. 2024; HF `TinyLlama/TinyLlama-1.1B` config",
        "Same width, depth and FFN. Tied (rule tied-embeddings, as Llama 3.2 1B), so 65.5M fewer parameters; "
        "8 KV heads (a quarter of the heads, rule grouped-query) where TinyLlama shares 4.",
    ),
    Published(
        "Llama 3.2 1B", "llama32_1b.yaml",
        "2048 wide, 16 layers, 32 heads / 8 KV heads, ffn 8192, tied, RoPE 500,000 with 128k rescaling; 1.24B",
        "Meta, HF `meta-llama/Llama-3.2-1B` config",
        "Same width, heads and tying. FFN at Llama's 8/3 rule (5632) instead of 4d, so the budget buys 21 "
        "layers instead of 16; RoPE base 10,000,000 for 128k (rule rope-base) where Llama 3.2 rescales "
        "500,000 (the `rope` op has no frequency scaling).",
    ),
    Published(
        "Llama 2 7B", "llama2_7b.yaml",
        "4096 wide, 32 layers, 32 heads (MHA), ffn 11008, untied; 6.74B",
        "Touvron et al. 2023, HF `meta-llama/Llama-2-7b-hf` config",
        "Same width and heads. Grouped-query attention (8 KV heads, as Llama 3 8B and Mistral 7B) saves "
        "attention weights, which buy 3 more layers; FFN 11264 (a multiple of 512 for 8-way tensor parallel "
        "shards) instead of 11008.",
    ),
    Published(
        "Llama 2 70B", "llama2_70b.yaml",
        "8192 wide, 80 layers, 64 heads / 8 KV heads, ffn 28672, untied; 69B",
        "Touvron et al. 2023, HF `meta-llama/Llama-2-70b-hf` config",
        "Heads, KV heads and FFN split 8 ways (rule parallel-shapes), 8 KV heads as Llama's. Wider and "
        "shallower: with the FFN at 8/3 d (Llama 2 70B uses 3.5d) an 8192-wide model would be 98 layers deep "
        "for the budget, further from the published depth curve than 9216 x 78.",
    ),
    Published(
        "ViT-B/16", "vit_b16.yaml",
        "768 wide, 12 layers, 12 heads, ffn 3072, patch 16, 224 px; 86.6M",
        "Dosovitskiy et al. 2021, Table 1",
        "The same model, to the parameter (86,567,656).",
    ),
    Published(
        "CLIP ViT-L/14", "clip_l14.yaml",
        "image 1024 wide x 24 layers, patch 14; text 768 x 12; projection 768; 428M",
        "Radford et al. 2021; HF `openai/clip-vit-large-patch14` config",
        "Same image width and patch (rule clip-patch). Both towers share one depth and the text tower is "
        "2/3 of the image width (704), so the budget gives 21 layers each where CLIP pairs a 24-layer image "
        "tower with a 12-layer text tower.",
    ),
    Published(
        "Stable Diffusion 1.5", "sd15.yaml",
        "U-Net base 320, mults 1-2-4-4, 2 ResNet blocks per level, transformer depth 1, CLIP ViT-L/14 text "
        "encoder; 983M",
        "Rombach et al. 2022; diffusers `UNet2DConditionModel` config",
        "The same model, to the parameter (982,581,444) (rule unet-scaling).",
    ),
]

_LM_KEYS = ("hidden_size", "layers", "heads", "kv_heads", "ffn_size")


def _fit_words(comp: Any) -> str:
    from metagen.frontend.units import format_count

    a, fam = comp.ctx.arch, comp.ctx.family
    n = format_count(comp.ctx.report["total_params"])
    if fam == "decoder_lm":
        kv = "MHA" if a["kv_heads"] == a["heads"] else f"{a['kv_heads']} KV heads"
        return (
            f"{a['hidden_size']} wide, {a['layers']} layers, {a['heads']} heads / {kv}, ffn {a['ffn_size']}, "
            f"{'tied' if a['tie_embeddings'] else 'untied'}, RoPE {a['rope_theta']:,.0f}; {n}"
        )
    if fam == "vit":
        return (
            f"{a['hidden_size']} wide, {a['layers']} layers, {a['heads']} heads, ffn {a['ffn_size']}, "
            f"patch {a['patch_size']}, {a['image_size']} px; {n}"
        )
    if fam == "clip":
        v, t = a["image_encoder"], a["text_encoder"]
        return (
            f"image {v['hidden_size']} wide x {v['layers']} layers, patch {v['patch_size']}; text "
            f"{t['hidden_size']} x {t['layers']}; projection {a['projection_dim']}; {n}"
        )
    if fam == "diffusion_unet":
        mults = "-".join(str(m) for m in a["channel_mults"])
        return (
            f"U-Net base {a['base_channels']}, mults {mults}, {a['res_blocks']} ResNet blocks per level, "
            f"transformer depth {a['transformer_depth']}, text encoder {a['text_encoder']['hidden_size']} x "
            f"{a['text_encoder']['layers']}; {n}"
        )
    return n


def _constraints_words(comp: Any) -> str:
    from metagen.frontend.units import format_count

    c = comp.ctx.spec.constraints
    b = comp.ctx.report["budget"]
    budget = format_count(b["max"]) + (" (task default)" if b.get("max_is_task_default") else "")
    tokens = comp.ctx.arch.get("context", comp.ctx.context_window)  # a ViT's: its patches + 1
    return f"{budget}, {tokens} tokens, `{c.device}`"


TUTORIAL = [
    "step1_minimal.yaml", "step3_constraints.yaml", "step4_training.yaml", "step5_image.yaml",
    "step6_diffusion.yaml", "step7_clip.yaml", "pattern_edge.yaml", "pattern_large_lm.yaml",
    "pattern_audio.yaml", "pattern_taste.yaml",
]


def _tiny_words(comp: Any) -> str:
    """A fit the published-table wording does not cover (audio, fallback)."""
    from metagen.frontend.units import format_count

    a = comp.ctx.arch
    return (
        f"{a['hidden_size']} wide, {a['layers']} layers, {a['heads']} heads / {a['kv_heads']} KV heads, "
        f"ffn {a['ffn_size']}; {format_count(comp.ctx.report['total_params'])}"
    )


def tutorial_table() -> str:
    """docs/families.md's table of the tutorial's specs: what the fitter chose and
    the design rules it applied."""
    from metagen.diagnostics import DiagnosticSink
    from metagen.pipeline import compile_spec

    lines = ["| spec | budget, context, device | MetaGen's fit | binding | design rules applied |", "| --- | --- | --- | --- | --- |"]
    for name in TUTORIAL:
        comp = compile_spec(os.path.join(ROOT, "examples", "tutorial", name), DiagnosticSink())
        words = _fit_words(comp)
        if comp.ctx.family in ("audio_lm", "fallback"):
            words = _tiny_words(comp)
        rules = "; ".join(f"`{e['rule']}`: {e['applied']}" for e in comp.ctx.report["fit"].get("rules", [])) or "-"
        lines.append(
            f"| `{name}` ({comp.ctx.family}) | {_constraints_words(comp)} | {words} | "
            f"{comp.ctx.report['binding_constraint']} | {rules} |"
        )
    return "\n".join(lines) + "\n"


def published_table() -> str:
    from metagen.diagnostics import DiagnosticSink
    from metagen.pipeline import compile_spec

    lines = [
        "| model | budget, context, device | published design | MetaGen's fit | why they differ |",
        "| --- | --- | --- | --- | --- |",
    ]
    for p in PUBLISHED:
        comp = compile_spec(os.path.join(ROOT, SPECS, p.spec), DiagnosticSink())
        spec = f"[`{p.spec}`](../{SPECS}/{p.spec})"
        lines.append(
            f"| {p.model} ({p.source}) | {_constraints_words(comp)}; {spec} | {p.design} | {_fit_words(comp)} "
            f"| {p.differences} |"
        )
    return "\n".join(lines) + "\n"
