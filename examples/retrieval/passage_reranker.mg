metagen 1.0

model "Passage Re-Ranker" {
  modality {
    inputs [text]
    outputs [label]
  }
  task {
    type ranking
    domain web_search
  }
  constraints {
    device consumer_gpu
    latency real-time
    parameter_budget { max 30M }
    context_window 256
  }
  training {
    objective [pairwise_ranking]
    data {
      sources [click_logs]
      size "20M query-passage pairs"
    }
  }
  evaluation { metrics [ndcg_at_10, mrr_at_10] }
}
