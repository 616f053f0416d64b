metagen 1.0

model "PatchTST forecaster" {
  description "transformers' PatchTSTForPrediction defaults: 90 -> 30 steps, one channel, patches of 16 every 8."
  modality {
    inputs [time_series]
    outputs [time_series]
  }
  task {
    type time_series_forecast
    lookback 90
    horizon 30
    num_outputs 1
  }
  constraints {
    parameter_budget { max 650K }
  }
  architecture {
    family transformer
    hidden_size 128
    layers 3
    heads 4
    ffn_size 512
    patch_size 16
    patch_stride 8
    pooling mean
  }
  training { objective [forecasting] }
}
