# Llama 2 13B: the same base, larger dimensions and a larger budget.
metagen 1.0

import "llama_base.mg"

model "llama2_13b" {
  description "Llama 2 13B (Touvron et al., 2023) with every convention pinned."
  constraints {
    parameter_budget { max 13.1B }  # 13,015,864,320 parameters
    memory_budget 80GB
  }
  architecture {
    hidden_size 5120
    layers 40
    heads 40
    kv_heads 40
    ffn_size 13824
  }
}
