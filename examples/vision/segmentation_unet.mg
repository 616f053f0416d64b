metagen 1.0

model "unet_segmenter" {
  description "U-Net semantic segmentation of 256 x 256 RGB images into 4 classes, mask at the image's resolution, cross-entropy plus Dice."
  modality {
    inputs [image]
    outputs [segmentation_mask]
  }
  task {
    type semantic_segmentation
    num_classes 4
    mask_resolution 256
  }
  constraints {
    parameter_budget { max 36M }
  }
  training { objective [semantic_segmentation, dice] }
  architecture {
    family cnn
    image_size 256
    channels 3
  }
}
