metagen 1.0

model "clip_animator" {
  description "Text-to-video latent diffusion: the SD 1.5 U-Net per frame with temporal transformers after every spatial block, clips of up to 16 frames."
  modality {
    inputs [text]
    outputs [video]
  }
  task { type generation }
  constraints {
    parameter_budget { max 1.5B }
  }
  training { objective [diffusion] }
  architecture {
    family diffusion
    frames 16
  }
}
