# The tutorial's "Audio Generation" pattern, completed into a full spec.
metagen 1.0

model "my_audio_model" {
  modality {
    inputs [audio]
    outputs [audio]
  }
  training { objective [autoregressive] }
  architecture { family transformer }
}
