metagen 1.0

model "vit_base_patch16_224" {
  description "ViT-B/16 (Dosovitskiy et al., 2020) classifier with every convention pinned."
  modality {
    inputs [image]
    outputs [label]
  }
  task {
    type classification
    num_classes 1000
  }
  constraints {
    parameter_budget { max 90M }
  }
  training { objective [classification] }
  architecture {
    family transformer
    image_size 224
    patch_size 16
    channels 3
    hidden_size 768
    layers 12
    heads 12
    ffn_size 3072
    activation gelu
    norm layernorm
    norm_eps 1e-12
    norm_position pre
    position learned
    pooling cls
    bias true
  }
}
