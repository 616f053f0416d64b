metagen 1.0

model "resnet50" {
  description "ResNet-50 (He et al., 2015; torchvision v1.5 strides) ImageNet classifier with every convention pinned."
  modality {
    inputs [image]
    outputs [label]
  }
  task {
    type classification
    num_classes 1000
  }
  constraints {
    parameter_budget { max 28M }
  }
  training { objective [classification] }
  architecture {
    family cnn
    image_size 224
    channels 3
    hidden_size 64
    layers 50
    activation relu
    norm_eps 1e-5
  }
}
