# GPT-2 medium from the GPT-2 base.
metagen 1.0

import "gpt2_base.mg"

model "gpt2_medium" {
  description "GPT-2 medium (Radford et al., 2019) with every convention pinned."
  constraints {
    parameter_budget { max 360M }  # 354,823,168 parameters
  }
  architecture {
    hidden_size 1024
    layers 24
    heads 16
    ffn_size 4096
  }
}
