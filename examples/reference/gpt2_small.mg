metagen 1.0

model "gpt2_small" {
  description "GPT-2 small (Radford et al., 2019) with every convention pinned."
  modality {
    inputs [text]
    outputs [text]
  }
  constraints {
    parameter_budget { max 125M }
    context_window 1024
  }
  training { objective [autoregressive] }
  architecture {
    family transformer
    vocab_size 50257
    hidden_size 768
    layers 12
    heads 12
    ffn_size 3072
    activation gelu_tanh
    norm layernorm
    norm_eps 1e-5
    norm_position pre
    position learned
    bias true
    tie_embeddings true
  }
}
