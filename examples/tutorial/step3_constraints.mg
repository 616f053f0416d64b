metagen 1.0

model "my_constrained_model" {
  description "A small, fast text model."
  modality {
    inputs [text]
    outputs [text]
  }
  constraints {
    parameter_budget { max 500M }
    latency real-time
    device consumer_gpu
    memory_budget 8GB
    context_window 32k
  }
}
