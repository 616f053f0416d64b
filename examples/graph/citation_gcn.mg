metagen 1.0

model "citation gcn" {
  description "Two-layer GCN node classifier (Cora-sized: 1433 features, 7 classes)."
  modality {
    inputs [graph]
    outputs [label]
  }
  task {
    type node_classification
    num_classes 7
    node_features 1433
  }
  architecture {
    family gnn
    message_passing gcn
    hidden_size 64
    layers 2
  }
  constraints {
    parameter_budget { max 110K }
  }
  training { objective [classification] }
}
