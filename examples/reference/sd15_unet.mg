metagen 1.0

model "sd15_text_to_image" {
  description "Stable Diffusion 1.5 denoising U-Net (Rombach et al., 2022) with its CLIP text encoder, pinned."
  modality {
    inputs [text, image]
    outputs [image]
  }
  constraints {
    parameter_budget { max 1B }
    memory_budget 24GB
    context_window 77
  }
  training { objective [diffusion] }
  architecture {
    family diffusion
    latent_channels 4
    sample_size 64
    base_channels 320
    channel_mults [1, 2, 4, 4]
    res_blocks 2
    attention_levels [0, 1, 2]
    heads 8
    transformer_depth 1
    norm_groups 32
    cross_attention_dim 768
    text_encoder {
      vocab_size 49408
      hidden_size 768
      layers 12
      heads 12
      ffn_size 3072
      activation quick_gelu
      norm layernorm
      norm_eps 1e-5
      position learned
      pooling none
    }
  }
}
