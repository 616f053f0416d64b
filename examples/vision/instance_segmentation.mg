metagen 1.0

model "instance_segmentation_detr" {
  description "Instance segmentation: a DETR-R50 detector with a query-based mask head (MaskFormer-style), one 128 x 128 mask per object query."
  modality {
    inputs [image]
    outputs [segmentation_mask]
  }
  task {
    type instance_segmentation
    num_classes 80
    num_anchors 100
    mask_resolution 128
  }
  constraints {
    parameter_budget { max 50M }
  }
  training { objective [instance_segmentation] }
  architecture {
    family transformer
    image_size 512
    hidden_size 256
    layers 6
    heads 8
    ffn_size 2048
  }
}
