metagen 1.0

model "ppo continuous control" {
  description "PPO actor-critic MLPs for a 17-value observation and 6 continuous actions (MuJoCo Walker-sized)."
  modality {
    inputs [tabular]
    outputs [action]
  }
  task {
    type policy_gradient
    action_space continuous
    action_dim 6
    num_features 17
  }
  constraints {
    parameter_budget { max 90K }
  }
  architecture {
    family mlp
    layers 2
  }
  training { objective [policy_gradient] }
}
