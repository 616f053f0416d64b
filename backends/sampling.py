"""`sample()` in the diffusion model's generated Python modules.

The loop is the runtime module backends/runtime/sampling.py (NumPy only), copied
in with the schedule function it shares with the training programs
(runtime/data.py's `_alphas_cumprod`); each backend adds how it calls the
autoencoder's halves (`_autoencoder`), and `sample` joins them to the module's
`run`. Every backend so draws the same noise and takes the same steps.
"""

from __future__ import annotations

import ast
from importlib import resources

from metagen.backends.runtime import runtime_source
from metagen.ir.graph import Model

# How each backend runs one autoencoder half (a member of the top module) on a numpy array.
AUTOENCODER_CALL = {
    "torch": '''
def _autoencoder(state, part, x):
    """The autoencoder half `part` of a Model on a numpy array."""
    device = next(state.parameters()).device
    with torch.no_grad():
        return getattr(state, part)(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)).cpu().numpy()
''',
    "flax": '''
def _autoencoder(state, part, x):
    """The autoencoder half `part` of a Model on a numpy array."""
    return np.asarray(getattr(state, part)(jnp.asarray(x, dtype=jnp.float32)))
''',
    "numpy": '''
def _autoencoder(state, part, x):
    """The autoencoder half `part` of a Model on a numpy array (float64 inside, as `run`)."""
    return np.asarray(getattr(state, part)(np.asarray(x, dtype=np.float64))).astype(np.float32)
''',
}

SAMPLE_FUNCTION = '''
def sample(
    state, input_ids, image=None, strength=0.8, steps=30, guidance_scale=7.5, height=None, width=None, seed=0,
    scheduler="ddim",
):
    """Images float32 [batch, 3, height, width] in [-1, 1] for the prompts `input_ids`
    (latents [batch, C, h, w] when the model has no autoencoder). `image` (with
    `strength`) starts from that image instead of pure noise; guidance_scale > 1
    runs classifier-free guidance against the empty prompt; scheduler "ddim" or
    "euler". Noise comes from numpy's default_rng(seed): every backend agrees."""
    pixels = "autoencoder" in CONFIG
    return _sample_loop(
        lambda x, t, ids: run(state, {"sample": x, "timestep": t, "input_ids": ids})["noise_pred"],
        (lambda x: _autoencoder(state, "vae_encoder", x)) if pixels else None,
        (lambda z: _autoencoder(state, "vae_decoder", z)) if pixels else None,
        CONFIG, CONFIG["noise_schedule"], input_ids, image, strength, steps, guidance_scale, height, width, seed,
        scheduler,
    )
'''


# A video U-Net's clips go through the same loop: the loop's latents are the clip
# with its frames stacked on the channels ([batch, frames*C, h, w]; the schedulers
# act elementwise and the noise is drawn in the same order), unfolded for each step.
VIDEO_SAMPLE_FUNCTION = '''
def sample(
    state, input_ids, video=None, strength=0.8, steps=30, guidance_scale=7.5, frames=None, height=None, width=None,
    seed=0, scheduler="ddim",
):
    """Latent clips float32 [batch, frames, C, h, w] for the prompts `input_ids`
    (frames <= CONFIG["frames"], default that many). `video`, latents [batch or 1,
    frames, C, h, w] (with `strength`), starts from that clip instead of pure noise
    (video -> video); guidance_scale > 1 runs classifier-free guidance against the
    empty prompt; scheduler "ddim" or "euler". Noise comes from numpy's
    default_rng(seed): every backend agrees."""
    c = CONFIG["latent_channels"]
    if video is not None:
        video = np.asarray(video, dtype=np.float32)
        if video.ndim != 5 or video.shape[2] != c:
            raise ValueError(f"video must be latents [batch, frames, {c}, h, w], got shape {video.shape}")
        frames = video.shape[1]
        video = video.reshape(video.shape[0], -1, *video.shape[3:])
    frames = int(frames or CONFIG["frames"])
    if not 1 <= frames <= CONFIG["frames"]:
        raise ValueError(f"frames must be in 1..{CONFIG['frames']}, got {frames}")

    def denoise(x, t, ids):
        clip = x.reshape(x.shape[0], frames, c, *x.shape[2:])
        eps = run(state, {"sample": clip, "timestep": t, "input_ids": ids})["noise_pred"]
        return np.asarray(eps).reshape(x.shape)

    stacked = dict(CONFIG, latent_channels=frames * c)
    x = _sample_loop(
        denoise, None, None, stacked, CONFIG["noise_schedule"], input_ids, video, strength, steps, guidance_scale,
        height, width, seed, scheduler,
    )
    return x.reshape(x.shape[0], frames, c, *x.shape[2:])
'''


def _function_source(module: str, name: str) -> str:
    """Top-level function `name` of runtime module `module`, verbatim."""
    text = resources.files("metagen.backends.runtime").joinpath(f"{module}.py").read_text(encoding="utf-8")
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return ast.get_source_segment(text, node)
    raise KeyError(f"runtime module {module} has no function {name}")


def sampler_source(model: Model, backend: str) -> str:
    """The sampling code a generated module of `backend` carries: empty unless the
    model is a diffusion model."""
    if model.family not in ("diffusion_unet", "video_unet"):
        return ""
    parts = [_function_source("data", "_alphas_cumprod"), runtime_source("sampling").body]
    if "autoencoder" in model.config:
        parts.append(AUTOENCODER_CALL[backend].strip("\n"))
    parts.append((VIDEO_SAMPLE_FUNCTION if model.family == "video_unet" else SAMPLE_FUNCTION).strip("\n"))
    return "\n\n\n".join(parts) + "\n"
