# The tutorial's "Large Language Model" pattern, completed into a full spec.
metagen 1.0

model "my_large_lm" {
  modality {
    inputs [text]
    outputs [text]
  }
  constraints {
    parameter_budget { max 70B }
    latency batch
    device datacenter_gpu
    context_window 128k
  }
  training {
    objective [autoregressive]
    compute {
      hardware 512xH100
      duration 30 days
    }
  }
}
