"""Sentence embedders (sentence-transformers conventions): the text encoder's trunk
(BERT conventions by default), mean pooling over the positions, then a linear
projection to `task.embedding_dim` (default: the model width). Trained with the
in-batch contrastive loss (multiple-negatives ranking, as sentence-transformers'
MultipleNegativesRankingLoss, symmetric): rows 2i and 2i+1 of a batch are a pair,
every other row is a negative (compiler/objectives.py, `in_batch_contrastive`).

The pooling is a plain mean over every position (the model has no padding mask):
feed equal-length, unpadded sequences, or pool outside the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from metagen.compiler.context import CompileContext
from metagen.compiler.families.base import Rule, derived
from metagen.compiler.families.blocks import report_structure
from metagen.compiler.families.encoder import EncoderClassifier, EncoderConfig, encoder_structure

TINY_EMBEDDING = 32


@dataclass
class EmbedderConfig(EncoderConfig):
    embedding_dim: int = derived(0)  # task.embedding_dim; 0 until the width is known: the width


class SentenceEmbedder(EncoderClassifier):
    name = "sentence_embedder"
    pipeline_tag = "sentence-similarity"
    doc = "Transformer text encoder, mean pooling and a projection to task.embedding_dim (sentence-transformers conventions)."
    inputs_doc = "input_ids: int64 [batch, seq]; token_type_ids: int64 [batch, seq] when type_vocab_size > 0"
    outputs_doc = "embedding: float32 [batch, embedding_dim]"
    rules = (
        Rule(
            ("text",), ("embedding",), ("contrastive", None),
            "the encoder's trunk, mean pooling, a projection to `task.embedding_dim`; in-batch contrastive loss",
        ),
    )
    default_objective = "contrastive"
    tasks = ("embedding", "retrieval")
    default_budget = 22_700_000
    default_budget_source = "all-MiniLM-L6-v2 (22.7M), sentence-transformers' default embedder"
    config = EmbedderConfig
    tiny_doc = f"as `encoder`, embedding width {TINY_EMBEDDING}"
    doc_line = "Sentence embedder: text encoder, mean pooling, projection."
    built = "a sentence embedder"
    classifies = False

    def configure(self, ctx: CompileContext) -> None:
        super().configure(ctx)
        a = ctx.arch
        a["num_classes"] = 0
        if not ctx.spec.architecture.given("pooling"):
            a["pooling"] = "mean"  # sentence-transformers' pooling; the BERT preset's pooler is for classifiers
        report_structure(ctx, encoder_structure(a))
        task = ctx.spec.task
        if task.given("embedding_dim"):
            a["embedding_dim"] = task.embedding_dim

    def tiny(self, ctx: CompileContext) -> None:
        super().tiny(ctx)
        ctx.arch["num_classes"] = 0
        ctx.arch["embedding_dim"] = TINY_EMBEDDING

    def head(self, top, a: dict[str, Any], x) -> dict[str, Any]:
        d = a["hidden_size"]
        dim = a["embedding_dim"] or d
        pooled = self.pool(top, a, x)
        top.layer("projection", "linear", in_features=d, out_features=dim, bias=True)
        return {"embedding": top.call("projection", pooled, hint="embedding")}

    def head_config(self, a: dict[str, Any]) -> dict[str, Any]:
        return {"embedding_dim": a["embedding_dim"] or a["hidden_size"]}
