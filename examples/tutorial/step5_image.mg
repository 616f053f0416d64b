metagen 1.0

model "my_image_model" {
  modality {
    inputs [image]
    outputs [image]
  }
  constraints {
    parameter_budget { max 86M }
  }
  training { objective [classification] }
  architecture { family transformer }
}
