metagen 1.0

model "bert_base_sentiment" {
  description "BERT-base (Devlin et al., 2018) with a two-class head, every convention pinned."
  modality {
    inputs [text]
    outputs [label]
  }
  task {
    type classification
    num_classes 2
  }
  constraints {
    parameter_budget { max 120M }
    context_window 512
  }
  training { objective [classification] }
  architecture {
    family transformer
    vocab_size 30522
    type_vocab_size 2
    hidden_size 768
    layers 12
    heads 12
    ffn_size 3072
    activation gelu
    norm layernorm
    norm_eps 1e-12
    norm_position post
    position learned
    pooling cls_pooler
    bias true
  }
}
