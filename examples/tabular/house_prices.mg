metagen 1.0

model "house price regressor" {
  description "MLP over 12 numeric and 2 categorical columns, Huber loss."
  modality {
    inputs [tabular]
    outputs [regression]
  }
  task {
    type regression
    num_features 12
    categorical_features ["city:40", "zone:5"]
    num_outputs 1
  }
  constraints {
    parameter_budget { max 1M }
  }
  architecture {
    family mlp
    dropout 0.1
  }
  training {
    objective [regression]
    config { loss huber }
  }
}
