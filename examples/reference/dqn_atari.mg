metagen 1.0

model "DQN Atari" {
  description "The Nature DQN (Mnih et al. 2015): 4 stacked 84 x 84 frames, 18 actions."
  modality {
    inputs [image]
    outputs [action]
  }
  task {
    type value_based
    num_actions 18
  }
  constraints {
    parameter_budget { max 1.8M }
  }
  architecture {
    family cnn
    image_size 84
    channels 4
    hidden_size 512
    activation relu
  }
  training { objective [value_based] }
}
