"""Every generated torch module compiles whole: torch.compile(fullgraph=True) raises on
any graph break, dynamic=True traces batch and sequence as symbols (a second shape
must reuse the graph: the stance fails on a recompile), and the compiled outputs
equal eager ones within CONTRACT §5.

The backend is aot_eager: dynamo's tracing and AOT autograd's functionalisation, the
parts that find graph breaks and shape specialisations, without inductor's C++ build
(~27 s for one tiny GPT-2 on a loaded 2-core machine). bench/torch_compile_bench.py
runs inductor."""

import pytest
import torch

from conftest import example, load_module

MASKED_LM = """\
metagen_version: "1.0"
name: "tiny_mlm"
modality:
  inputs: ["text"]
  outputs: ["text"]
training:
  objective: ["masked"]
"""

CASES = [  # (test id, family the spec compiles to, spec; None: MASKED_LM)
    ("gpt2", "decoder_lm", example("reference", "gpt2_small.yaml")),
    ("llama", "decoder_lm", example("reference", "llama2_7b.yaml")),
    ("audio", "audio_lm", example("tutorial", "pattern_audio.yaml")),
    ("bert_classifier", "encoder", example("reference", "bert_base_classifier.yaml")),
    ("masked_lm", "masked_lm", None),
    ("vit", "vit", example("reference", "vit_base_patch16.yaml")),
    ("clip", "clip", example("reference", "clip_vit_b32.yaml")),
    ("fallback", "fallback", example("tutorial", "pattern_taste.yaml")),
    ("dense_detector", "dense_detector", example("vision", "dense_detector_edge.yaml")),
    ("video_vit", "video_vit", example("tutorial", "pattern_video_classifier.yaml")),
    ("tabular", "tabular", example("tabular", "churn_ft_transformer.yaml")),
    ("patchtst", "time_series", example("reference", "patchtst.yaml")),
    ("dqn", "rl_agent", example("reference", "dqn_atari.yaml")),
    ("gat", "graph", example("graph", "molecule_gat.yaml")),
    ("sentence_embedder", "sentence_embedder", example("retrieval", "faq_embedder.yaml")),
    ("cross_encoder", "cross_encoder", example("retrieval", "passage_reranker.yaml")),
    ("two_tower", "two_tower", example("retrieval", "movie_recommender.yaml")),
]
SLOW_CASES = [  # 50-350 s each on the 2-core machine under load (aot_eager traces every conv and norm)
    ("resnet", "resnet", example("reference", "resnet50.yaml")),
    ("segmentation_unet", "segmentation_unet", example("vision", "segmentation_unet.yaml")),
    ("detr", "detr", example("reference", "detr_resnet50.yaml")),
    ("unet", "diffusion_unet", example("reference", "sd15_unet.yaml")),
    ("detr_mask", "detr_mask", example("vision", "instance_segmentation.yaml")),
    ("video_unet", "video_unet", example("tutorial", "pattern_text_to_video.yaml")),
]


def test_every_family_has_a_case():
    from metagen.compiler.families import FAMILIES

    assert {f for _, f, _ in CASES + SLOW_CASES} == set(FAMILIES)


def _inputs(mod, batch: int, seq: int | None) -> dict[str, torch.Tensor]:
    """Example inputs at `batch` and, where an input has a `seq` dim, `seq`."""
    if "seq" in mod._EXAMPLE_SIZES:
        mod._EXAMPLE_SIZES = {**mod._EXAMPLE_SIZES, "seq": seq}
    return {name: torch.from_numpy(x) for name, x in mod.example_inputs(batch_size=batch).items()}


def _close(got: torch.Tensor, ref: torch.Tensor) -> bool:
    return bool(((got - ref).abs() <= 1e-5 + 1e-4 * ref.abs()).all())


@pytest.mark.parametrize(
    "family,spec",
    [pytest.param(f, s, id=i) for i, f, s in CASES]
    + [pytest.param(f, s, id=i, marks=pytest.mark.slow) for i, f, s in SLOW_CASES],
)
def test_compiles_fullgraph_dynamic_and_matches_eager(compiled, tmp_path, family, spec):
    if spec is None:
        spec = tmp_path / "mlm.yaml"
        spec.write_text(MASKED_LM)
    path, comp = compiled(str(spec), "torch")
    assert comp.model.family == family
    mod = load_module(str(path))
    model = mod.init(0)
    torch._dynamo.reset()
    fast = torch.compile(model, fullgraph=True, dynamic=True, backend="aot_eager")
    seq = mod._EXAMPLE_SIZES.get("seq")  # None: no input has a sequence dim (ViT)
    # Batch sizes unlike any fixed dim (audio's 2 codebooks, 3 channels, ...): dynamic=True
    # makes those symbolic too, and duck sizing would tie a batch of 2 to them. Lengths
    # likewise: 16 is the tiny head_dim, which the KV cache's concat pins.
    shapes = [(5, seq and seq - 3), (7, seq and seq - 5)]
    for i, (batch, length) in enumerate(shapes):
        x = _inputs(mod, batch, length)
        with torch.no_grad():
            ref = model(**x)
            if i == 0:
                got = fast(**x)
            else:
                with torch.compiler.set_stance("fail_on_recompile"):
                    got = fast(**x)
        assert list(got) == list(ref)
        for name in ref:
            assert got[name].shape == ref[name].shape, name
            assert _close(got[name], ref[name]), (family, name, batch, length)
