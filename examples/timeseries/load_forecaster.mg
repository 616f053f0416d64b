metagen 1.0

model "grid load forecaster" {
  description "PatchTST over 3 channels: 336 steps in, 96 out, LayerNorm blocks."
  modality {
    inputs [time_series]
    outputs [time_series]
  }
  task {
    type time_series_forecast
    lookback 336
    horizon 96
    num_outputs 3
  }
  constraints {
    parameter_budget { max 4M }
  }
  architecture { norm layernorm }
  training { objective [forecasting] }
}
