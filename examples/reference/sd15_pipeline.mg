metagen 1.0

model "sd15_pipeline" {
  description "Stable Diffusion 1.5 (Rombach et al., 2022): denoising U-Net, CLIP text encoder and image autoencoder (AutoencoderKL), pinned; images in pixels."
  modality {
    inputs [text, image]
    outputs [image]
  }
  constraints {
    parameter_budget { max 1.1B }
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
    images pixels
    autoencoder {
      block_channels [128, 256, 512, 512]
      layers_per_block 2
      norm_groups 32
      scaling_factor 0.18215
    }
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
