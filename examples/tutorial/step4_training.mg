metagen 1.0

model "my_trained_model" {
  modality {
    inputs [text]
    outputs [text]
  }
  constraints {
    parameter_budget { max 1B }
  }
  training {
    objective [autoregressive]
    data {
      sources [synthetic, licensed]
      size 100B tokens
      governance {
        pii filtered
        copyright licensed
      }
    }
    compute {
      hardware 8xA100
      duration 5 days
    }
  }
}
