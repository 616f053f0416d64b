# GPT-2 small from the GPT-2 base. Builds the same spec as
# examples/reference/gpt2_small.yaml.
metagen 1.0

import "gpt2_base.mg"

model "gpt2_small" {
  description "GPT-2 small (Radford et al., 2019) with every convention pinned."
  architecture {
    hidden_size 768
    layers 12
    heads 12
    ffn_size 3072
  }
}
