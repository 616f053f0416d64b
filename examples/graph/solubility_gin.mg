metagen 1.0

model "solubility gin" {
  description "GIN graph regressor: one value per molecule (ESOL-style solubility)."
  modality {
    inputs [graph]
    outputs [regression]
  }
  task {
    type regression
    num_outputs 1
    node_features 9
  }
  constraints {
    parameter_budget { max 200K }
  }
  architecture {
    family gnn
    message_passing gin
  }
  training { objective [regression] }
}
