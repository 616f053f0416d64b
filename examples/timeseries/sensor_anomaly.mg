metagen 1.0

model "sensor anomaly detector" {
  modality {
    inputs [time_series]
    outputs [time_series]
  }
  task {
    type anomaly_detection
    lookback 64
    num_outputs 4
  }
  constraints {
    parameter_budget { max 500K }
  }
  architecture { family mlp }
  training { objective [reconstruction] }
}
