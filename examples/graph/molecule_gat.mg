metagen 1.0

model "molecule gat" {
  description "GAT graph classifier over atoms (32 features) and bonds (8 features)."
  modality {
    inputs [graph]
    outputs [label]
  }
  task {
    type graph_classification
    num_classes 2
    node_features 32
    edge_features 8
  }
  constraints {
    parameter_budget { max 500K }
  }
  architecture {
    family gnn
    message_passing gat
    heads 4
  }
  training { objective [classification] }
}
