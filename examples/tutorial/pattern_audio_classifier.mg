metagen 1.0

model "my_audio_classifier" {
  modality {
    inputs [audio]
    outputs [label]
  }
  constraints {
    parameter_budget { max 50M }
    context_window 1k
  }
  task { num_classes 5 }
}
