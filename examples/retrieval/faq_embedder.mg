metagen 1.0

model "FAQ Sentence Embedder" {
  modality {
    inputs [text]
    outputs [embedding]
  }
  task {
    type embedding
    domain customer_support
    embedding_dim 256
  }
  constraints {
    device cpu
    latency near-real-time
    parameter_budget { max 25M }
    context_window 128
  }
  training {
    objective [contrastive]
    data {
      sources [faq_paraphrases]
      size "400k question pairs"
    }
  }
  evaluation { metrics [recall_at_1, mrr] }
}
