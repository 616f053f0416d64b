# GPT-2 conventions (Radford et al., 2019): the base of the GPT-2 presets.
# On its own, a GPT-2-style decoder fitted to the budget.
metagen 1.0

model "gpt2_base" {
  description "A GPT-2-style decoder, fitted to the parameter budget."
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
    activation gelu_tanh
    norm layernorm
    norm_eps 1e-5
    norm_position pre
    position learned
    bias true
    tie_embeddings true  # the LM head shares the token embedding
  }
}
