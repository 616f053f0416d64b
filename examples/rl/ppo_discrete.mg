metagen 1.0

model "ppo discrete agent" {
  description "PPO actor-critic MLPs (64 x 2, tanh, as Stable-Baselines3's MlpPolicy) for 5 discrete actions."
  modality {
    inputs [tabular]
    outputs [action]
  }
  task {
    type actor_critic
    action_space discrete
    num_actions 5
    num_features 8
  }
  constraints {
    parameter_budget { max 10K }
  }
  architecture {
    family mlp
    hidden_size 64
    layers 2
  }
  training { objective [policy_gradient] }
}
