metagen 1.0

model "Movie Recommender" {
  modality {
    inputs [tabular]
    outputs [embedding]
  }
  task {
    type recommendation
    domain streaming
    embedding_dim 64
  }
  constraints {
    device cpu
    latency real-time
    parameter_budget { max 8M }
  }
  architecture {
    family mlp
    num_users 50000
    num_items 20000
    user_features 24
    item_features 40
  }
  training {
    objective [pairwise_ranking]
    data {
      sources [watch_history]
      size 300M interactions
    }
  }
  evaluation { metrics [hit_rate_at_10, ndcg_at_10] }
}
