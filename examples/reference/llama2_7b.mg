metagen 1.0

model "llama2_7b" {
  description "Llama 2 7B (Touvron et al., 2023) with every convention pinned."
  modality {
    inputs [text]
    outputs [text]
  }
  constraints {
    parameter_budget { max 7B }
    memory_budget 24GB
    device datacenter_gpu
    context_window 4096
  }
  training { objective [autoregressive] }
  architecture {
    family transformer
    vocab_size 32000
    hidden_size 4096
    layers 32
    heads 32
    kv_heads 32
    ffn_size 11008
    activation swiglu
    norm rmsnorm
    norm_eps 1e-5
    norm_position pre
    position rope
    rope_theta 10000
    bias false
    tie_embeddings false
  }
}
