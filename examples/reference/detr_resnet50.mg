metagen 1.0

model "detr_resnet50" {
  description "DETR (Carion et al., 2020) with a ResNet-50 backbone, 100 object queries and COCO's 91 category ids, every convention pinned."
  modality {
    inputs [image]
    outputs [bounding_boxes]
  }
  task {
    type object_detection
    num_classes 91
    num_anchors 100
  }
  constraints {
    parameter_budget { max 45M }
  }
  training { objective [object_detection] }
  architecture {
    family transformer
    image_size 800
    channels 3
    hidden_size 256
    layers 6
    heads 8
    ffn_size 2048
    activation relu
    norm_eps 1e-5
  }
}
