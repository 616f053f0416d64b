metagen 1.0

model "Review Sentiment Encoder" {
  version "2.3.1"
  description "Product-review polarity in three classes."
  modality {
    inputs [text]
    outputs [classification]
  }
  task {
    type classification
    domain retail_reviews
    num_classes 3
  }
  constraints {
    device consumer_gpu
    latency near-real-time
    parameter_budget { max 40M }
    context_window 256
    throughput 200 requests/s
  }
  training {
    objective [classification]
    data {
      sources [store_reviews, public_reviews]
      size 2.5M reviews
      governance {
        pii "usernames removed"
        copyright licensed
      }
    }
    compute {
      hardware 2xA100
      duration 10 hours
    }
    alignment {
      method sft
      policy "no personal data in outputs"
    }
    config {
      batch_size 64
      warmup_steps 500
    }
  }
  architecture {
    family transformer
    components [
      {
        name Tokenizer
        type wordpiece
      },
      {
        name Encoder
        type transformer_encoder
      },
      pooler,
    ]
  }
  outputs { artifacts [pytorch_skeleton, model_card] }
  evaluation {
    benchmarks [review_polarity_test]
    baselines [bag_of_words_logreg]
    metrics [accuracy, f1_macro]
  }
  reproducibility {
    seed 7
    determinism "cuDNN deterministic kernels"
  }
}
