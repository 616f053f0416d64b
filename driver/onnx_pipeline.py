"""Sampling images with a diffusion model's ONNX pipeline folder in onnxruntime.

The folder is what `metagen synth` writes to `onnx/` (or `metagenc --target onnx`
next to its output) for a diffusion model: text_encoder/, unet/, vae_encoder/,
vae_decoder/ and pipeline.json (backends/onnx_pipeline.py). The loop is the one the
generated modules' `sample()` runs (backends/runtime/sampling.py), so with the same
weights and seed the images agree with torch's, flax's and numpy's.

    from metagen.onnx_pipeline import OnnxDiffusionPipeline
    pipe = OnnxDiffusionPipeline("out/run-.../onnx")
    images = pipe.sample(input_ids, steps=30, guidance_scale=7.5, seed=0)

Unlike the generated modules' `sample()`, the prompt is encoded once per call (the
U-Net graph takes the text states), not at every step.
"""

from __future__ import annotations

import json
import os

import numpy as np

from metagen.backends.onnx_pipeline import PIPELINE_FILE
from metagen.backends.runtime.sampling import _sample_loop


class OnnxDiffusionPipeline:
    def __init__(self, folder: str, providers: tuple[str, ...] = ("CPUExecutionProvider",)):
        import onnxruntime as ort

        with open(os.path.join(folder, PIPELINE_FILE), encoding="utf-8") as f:
            index = json.load(f)
        self.config = index["config"]
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.sessions = {
            name: ort.InferenceSession(os.path.join(folder, part["path"]), opts, providers=list(providers))
            for name, part in index["parts"].items()
        }

    def _run(self, part: str, **feed: np.ndarray) -> np.ndarray:
        return self.sessions[part].run(None, feed)[0]

    def sample(
        self, input_ids, image=None, strength=0.8, steps=30, guidance_scale=7.5, height=None, width=None, seed=0,
        scheduler="ddim",
    ) -> np.ndarray:
        """As the generated modules' `sample()`: images float32 [batch, 3, H, W] in
        [-1, 1] (latents without an autoencoder)."""
        states: dict[bytes, np.ndarray] = {}

        def denoise(x, t, ids):
            key = ids.tobytes() + bytes(ids.shape)
            if key not in states:
                states[key] = self._run("text_encoder", input_ids=ids, attention_mask=np.ones_like(ids))
            return self._run("unet", sample=x, timestep=t, encoder_hidden_states=states[key])

        pixels = "vae_decoder" in self.sessions
        return _sample_loop(
            denoise,
            (lambda x: self._run("vae_encoder", image=x)) if pixels else None,
            (lambda z: self._run("vae_decoder", latents=z)) if pixels else None,
            self.config, self.config["noise_schedule"], input_ids, image, strength, steps, guidance_scale, height,
            width, seed, scheduler,
        )
