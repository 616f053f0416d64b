metagen 1.0

model "node regression" {
  description "GCN node regressor: three values per node over the same graph (graph -> graph)."
  modality {
    inputs [graph]
    outputs [graph]
  }
  task {
    type regression
    num_outputs 3
    node_features 12
  }
  architecture {
    family gnn
    message_passing gcn
    hidden_size 64
    layers 3
  }
  constraints {
    parameter_budget { max 50K }
  }
  training { objective [regression] }
}
