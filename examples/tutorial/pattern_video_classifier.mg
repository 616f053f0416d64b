metagen 1.0

model "action_recognizer" {
  description "Action recognition on short clips (Kinetics-400 classes): a factorised video transformer, a ViT per frame then a temporal transformer."
  modality {
    inputs [video]
    outputs [label]
  }
  task {
    type classification
    num_classes 400
  }
  constraints {
    parameter_budget { max 30M }
  }
  training { objective [classification] }
  architecture {
    family transformer
    frames 16
    temporal_layers 4
  }
}
