# Overriding a preset: Llama 2 7B with a longer context. Only the changed keys are
# written; every other key of llama2_7b.mg (and of the base it imports) stays.
metagen 1.0

import "llama2_7b.mg"

model "llama2_7b_32k" {
  description "Llama 2 7B with a 32k context window and a larger RoPE base."
  constraints {
    memory_budget 80GB  # the KV cache of 32k tokens needs room
    context_window 32k
  }
  architecture { rope_theta 1000000 }  # the base published 32k models use (docs/families.md, rule rope-base)
}
