# Llama 2 7B from the Llama base: only what the base leaves open is written here.
# Builds the same spec as examples/reference/llama2_7b.yaml.
metagen 1.0

import "llama_base.mg"

model "llama2_7b" {
  description "Llama 2 7B (Touvron et al., 2023) with every convention pinned."
  architecture {
    hidden_size 4096
    layers 32
    heads 32
    kv_heads 32
    ffn_size 11008
  }
}
