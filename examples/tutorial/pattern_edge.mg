# The tutorial's "Edge Deployment" pattern, completed into a full spec.
metagen 1.0

model "my_edge_model" {
  modality {
    inputs [text]
    outputs [text]
  }
  constraints {
    parameter_budget { max 50M }
    latency real-time
    device edge
    memory_budget 512MB
  }
}
