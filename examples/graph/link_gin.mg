metagen 1.0

model "link gin" {
  description "GIN encoder scoring node pairs by the dot product of their embeddings."
  modality {
    inputs [graph]
    outputs [label]
  }
  task {
    type link_prediction
    node_features 64
  }
  constraints {
    parameter_budget { max 300K }
  }
  architecture {
    family gnn
    message_passing gin
  }
  training { objective [classification] }
}
