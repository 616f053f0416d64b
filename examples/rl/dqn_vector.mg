metagen 1.0

model "dqn vector agent" {
  description "DQN Q-network MLP over a 16-value observation, 3 actions."
  modality {
    inputs [tabular]
    outputs [action]
  }
  task {
    type value_based
    num_actions 3
    num_features 16
  }
  constraints {
    parameter_budget { max 45K }
  }
  architecture {
    family mlp
    layers 2
  }
  training { objective [value_based] }
}
