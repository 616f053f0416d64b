"""ONNX output of a diffusion model: besides `model.onnx` (one denoising step, text
encoder included), the pipeline's parts as separate graphs in one folder, laid out
as diffusers' ONNX pipelines are:

    text_encoder/model.onnx   input_ids, attention_mask -> last_hidden_state
    unet/model.onnx           sample, timestep, encoder_hidden_states -> noise_pred
    vae_encoder/model.onnx    image -> moments             (images: pixels only)
    vae_decoder/model.onnx    latents -> image             (images: pixels only)
    pipeline.json             the model's CONFIG and each part's inputs and outputs

Every spatial size, the batch and the prompt length are dynamic axes. Each part
holds the whole model's weights under the same canonical names (parts are cut by
`pipeline_parts`), so given weights or `init(seed)` agree with `model.onnx`.
`metagen.onnx_pipeline` samples images with them in onnxruntime. The ONNX backend's
entry point (`onnx_backend.lower_to_onnx_folder`) adds these files.
"""

from __future__ import annotations

import json

import numpy as np

from metagen.backends.onnx_backend import lower_to_onnx
from metagen.ir.graph import Model

PIPELINE_FILE = "pipeline.json"


def pipeline_files(model: Model, weights: dict[str, np.ndarray] | None, seed: int, **options) -> dict:
    """The part graphs and pipeline.json, keyed by their path in the ONNX folder;
    `options` as `lower_to_onnx` takes them."""
    from metagen.compiler.families.diffusion_pipeline import pipeline_parts

    files: dict[str, bytes] = {}
    index = {"config": model.config, "parts": {}}
    for name, part in pipeline_parts(model).items():
        own = None if weights is None else {k: weights[k] for k, _ in part.walk_params()}
        for rel, data in lower_to_onnx(part, weights=own, seed=seed, data_name="model.onnx.data", **options).items():
            files[f"{name}/{rel or 'model.onnx'}"] = data
        index["parts"][name] = {
            "path": f"{name}/model.onnx",
            "inputs": {i.name: {"shape": list(i.type.shape), "dtype": i.type.dtype.numpy} for i in part.inputs},
            "outputs": list(part.output_names),
        }
    files[PIPELINE_FILE] = (json.dumps(index, indent=2) + "\n").encode("utf-8")
    return files
