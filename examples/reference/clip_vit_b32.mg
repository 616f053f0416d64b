metagen 1.0

model "clip_vit_b32" {
  description "CLIP ViT-B/32 (Radford et al., 2021) with every convention pinned."
  modality {
    inputs [text, image]
    outputs [text, image]
  }
  constraints {
    parameter_budget { max 160M }
    context_window 77
  }
  training { objective [contrastive] }
  architecture {
    family transformer
    projection_dim 512
    text_encoder {
      vocab_size 49408
      hidden_size 512
      layers 12
      heads 8
      ffn_size 2048
      activation quick_gelu
      norm layernorm
      norm_eps 1e-5
      position learned
      pooling eot
    }
    image_encoder {
      image_size 224
      patch_size 32
      channels 3
      hidden_size 768
      layers 12
      heads 12
      ffn_size 3072
      activation quick_gelu
      norm layernorm
      norm_eps 1e-5
      position learned
      pooling cls
    }
  }
}
