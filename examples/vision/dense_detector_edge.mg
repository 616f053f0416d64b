metagen 1.0

model "edge_detector" {
  description "One-stage anchor-free detector (FCOS-style, ResNet-18 trunk to stride 16) for 20 classes on an edge device."
  modality {
    inputs [image]
    outputs [bounding_boxes]
  }
  task {
    type object_detection
    num_classes 20
  }
  constraints {
    device edge
    parameter_budget { max 4.6M }
  }
  training { objective [object_detection] }
  architecture {
    family cnn
    image_size 320
    layers 18
  }
}
