# Llama-family conventions (Touvron et al., 2023): the base of the Llama presets.
# A spec that imports this file starts from everything written here; its own
# blocks are merged over these key by key, and its values and lists replace them.
# On its own it is a complete spec too: a Llama-style decoder fitted to 7B.
metagen 1.0

model "llama_base" {
  description "A Llama-style decoder, fitted to the parameter budget."
  modality {
    inputs [text]
    outputs [text]
  }
  constraints {
    parameter_budget { max 7B }
    device datacenter_gpu
    memory_budget 24GB
    context_window 4096
  }
  training { objective [autoregressive] }
  architecture {
    family transformer
    vocab_size 32000
    activation swiglu  # gated SiLU feed-forward
    norm rmsnorm
    norm_eps 1e-5
    norm_position pre
    position rope  # rotate-half convention
    rope_theta 10000
    bias false
    tie_embeddings false
  }
}
