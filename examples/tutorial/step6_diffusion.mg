metagen 1.0

model "my_diffusion_model" {
  modality {
    inputs [text, image]
    outputs [image]
  }
  constraints {
    parameter_budget { max 2B }
    memory_budget 24GB
  }
  training { objective [diffusion] }
  architecture { family diffusion }
}
