metagen 1.0

model "my_clip_model" {
  modality {
    inputs [text, image]
    outputs [text, image]
  }
  constraints {
    parameter_budget { max 400M }
  }
  training { objective [contrastive] }
  architecture { family transformer }
}
