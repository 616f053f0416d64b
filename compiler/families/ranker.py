"""Cross-encoder rankers (the sentence-transformers CrossEncoder / BERT re-ranker
conventions): a query and a candidate document are one input (`[CLS] query [SEP]
document [SEP]`, segment ids telling them apart), the text encoder's trunk reads
them together, its pooler (dense + tanh on the first token) and a linear layer give
one relevance `score` per row.

Trained on groups of `GROUP` candidates per query (rows g*GROUP .. g*GROUP+GROUP-1
of a batch), one of them relevant (compiler/objectives.py): `ranking` is the
listwise softmax cross-entropy over each group, `pairwise_ranking` RankNet's
-log sigmoid(s_relevant - s_other) over every (relevant, other) pair of a group.
"""

from __future__ import annotations

from typing import Any

from metagen.compiler.context import CompileContext
from metagen.compiler.families.base import Rule
from metagen.compiler.families.encoder import EncoderClassifier


class CrossEncoderRanker(EncoderClassifier):
    name = "cross_encoder"
    pipeline_tag = "text-ranking"
    doc = "Cross-encoder ranker: a text encoder reads query and document together and scores their relevance."
    inputs_doc = "input_ids: int64 [batch, seq] (query and document, one row per pair); token_type_ids: int64 [batch, seq] when type_vocab_size > 0"
    outputs_doc = "score: float32 [batch], relevance of each row's document to its query"
    rules = (
        Rule(
            ("text",), ("label",), ("ranking", "pairwise_ranking"),
            "BERT re-ranker: encoder, pooler, one score per (query, document) row; listwise or pairwise loss",
        ),
        Rule(("text",), ("regression",), ("ranking", "pairwise_ranking"), "the same model; the score is the regression output"),
    )
    default_objective = "ranking"
    tasks = ("ranking", "retrieval", "recommendation")
    default_budget = 22_700_000
    default_budget_source = "cross-encoder/ms-marco-MiniLM-L-6-v2 (22.7M), the usual sentence-transformers re-ranker"
    tiny_doc = "as `encoder`, one score"
    doc_line = "Cross-encoder ranker: a relevance score per (query, document) row."
    built = "a cross-encoder ranker"
    classifies = False

    def configure(self, ctx: CompileContext) -> None:
        super().configure(ctx)
        ctx.arch["num_classes"] = 0

    def tiny(self, ctx: CompileContext) -> None:
        super().tiny(ctx)
        ctx.arch["num_classes"] = 0

    def head(self, top, a: dict[str, Any], x) -> dict[str, Any]:
        d = a["hidden_size"]
        pooled = self.pool(top, a, x)
        top.layer("scorer", "linear", in_features=d, out_features=1, bias=True)
        return {"score": top.op("select", top.call("scorer", pooled, hint="score"), axis=1, index=0, hint="score")}

    def head_config(self, a: dict[str, Any]) -> dict[str, Any]:
        return {}
