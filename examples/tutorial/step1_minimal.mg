metagen 1.0

model "my_first_model" {
  modality {
    inputs [text]
    outputs [text]
  }
}
