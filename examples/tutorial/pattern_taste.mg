# The tutorial's troubleshooting case: an unsupported modality gets a warning and a
# best-effort model.
metagen 1.0

model "my_taste_model" {
  modality {
    inputs [taste]
    outputs [text]
  }
}
