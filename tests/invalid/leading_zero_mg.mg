metagen 1.0
model "t" {
  modality { inputs [text]; outputs [text] }
  architecture { layers 010 }
}
