metagen 1.0
model "t" {
  modality { inputs [text]; outputs [text] }
  "x\u001b[2J\u0007" 1
}
