metagen 1.0

model "Photo Search" {
  modality {
    inputs [text, image]
    outputs [embedding]
  }
  task {
    type retrieval
    domain stock_photos
    embedding_dim 256
  }
  constraints {
    device consumer_gpu
    latency batch
    parameter_budget { max 60M }
    context_window 64
  }
  training {
    objective [contrastive]
    data {
      sources [captioned_photos]
      size 12M pairs
    }
  }
  evaluation { metrics [recall_at_5] }
}
