"""Diffusion sampling: DDIM and Euler (discrete) over the training schedule,
classifier-free guidance, image-to-image. NumPy only.

The diffusion model's generated modules (torch, flax, numpy) carry a copy of this
code (backends/sampling.py copies it), and `metagen.onnx_pipeline` runs it over
onnxruntime sessions, so every backend draws the same noise from the same seed and
takes the same steps; only the denoiser and the autoencoder calls differ. The
schedulers follow diffusers' `DDIMScheduler` (timestep_spacing "leading",
steps_offset 1, set_alpha_to_one False, eta 0: Stable Diffusion's settings) and
`EulerDiscreteScheduler` (timestep_spacing "linspace", no churn), epsilon
prediction, over the schedule the model was trained with.
"""

import numpy as np

from metagen.backends.runtime.data import _alphas_cumprod


class _DDIM:
    """Deterministic DDIM (eta 0)."""

    def __init__(self, schedule, steps):
        self.acp = _alphas_cumprod(schedule)
        train = schedule["steps"]
        if not 1 <= steps <= train:
            raise ValueError(f"steps must be between 1 and {train}, got {steps}")
        self.ratio = train // steps
        self.timesteps = (np.arange(steps) * self.ratio).round()[::-1].astype(np.int64) + 1
        self.init_sigma = 1.0

    def scale_input(self, x, i):
        return x

    def _alpha(self, t):
        return self.acp[t] if t >= 0 else self.acp[0]

    def step(self, eps, i, x):
        t = int(self.timesteps[i])
        a_t, a_prev = self._alpha(t), self._alpha(t - self.ratio)
        x0 = (x - np.sqrt(1.0 - a_t) * eps) / np.sqrt(a_t)
        return (np.sqrt(a_prev) * x0 + np.sqrt(1.0 - a_prev) * eps).astype(np.float32)

    def add_noise(self, x0, noise, i):
        a = self.acp[int(self.timesteps[i])]
        return (np.sqrt(a) * x0 + np.sqrt(1.0 - a) * noise).astype(np.float32)


class _EulerDiscrete:
    """Euler's method on the probability-flow ODE in sigma = sqrt((1 - a) / a)."""

    def __init__(self, schedule, steps):
        acp = _alphas_cumprod(schedule)
        train = schedule["steps"]
        if not 1 <= steps <= train:
            raise ValueError(f"steps must be between 1 and {train}, got {steps}")
        self.timesteps = np.linspace(0, train - 1, steps)[::-1].astype(np.float32)
        sigmas = np.sqrt((1.0 - acp) / acp)
        self.sigmas = np.concatenate([np.interp(self.timesteps, np.arange(train), sigmas), [0.0]])
        self.init_sigma = float(self.sigmas.max())  # diffusers' for "linspace" spacing

    def scale_input(self, x, i):
        return (x / np.sqrt(self.sigmas[i] ** 2 + 1.0)).astype(np.float32)

    def step(self, eps, i, x):
        # x0 = x - sigma * eps, so the ODE's derivative (x - x0) / sigma is eps itself.
        return (x + eps * (self.sigmas[i + 1] - self.sigmas[i])).astype(np.float32)

    def add_noise(self, x0, noise, i):
        return (x0 + noise * self.sigmas[i]).astype(np.float32)


_SCHEDULERS = {"ddim": _DDIM, "euler": _EulerDiscrete}


def _unconditional_ids(input_ids, vocab_size):
    """The empty prompt as CLIP's tokenizer pads it: start token (vocab - 2), then the
    end token (vocab - 1) to the prompt's length."""
    ids = np.full(input_ids.shape, vocab_size - 1, dtype=np.int64)
    ids[:, 0] = vocab_size - 2
    return ids


def _sample_loop(
    denoise,
    encode,
    decode,
    config,
    schedule,
    input_ids,
    image,
    strength,
    steps,
    guidance_scale,
    height,
    width,
    seed,
    scheduler,
):
    """The sampling loop behind every backend's `sample()`. `denoise(sample, timestep,
    input_ids)` is one U-Net step; `encode(image)` the autoencoder's moments and
    `decode(latents)` its image, both None without an autoencoder (then `image`, the
    result and height/width are latents)."""
    if scheduler not in _SCHEDULERS:
        raise ValueError(f"scheduler must be one of {sorted(_SCHEDULERS)}, got {scheduler!r}")
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    ids = np.asarray(input_ids, dtype=np.int64)
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, seq], got shape {ids.shape}")
    batch = ids.shape[0]
    channels = config["latent_channels"]
    pixels = decode is not None
    ae = config.get("autoencoder") if pixels else None
    factor = 2 ** (len(ae["block_channels"]) - 1) if pixels else 1
    scaling = ae["scaling_factor"] if pixels else 1.0
    init = None
    if image is not None:
        image = np.asarray(image, dtype=np.float32)
        want = 3 if pixels else channels
        if image.ndim != 4 or image.shape[1] != want or image.shape[0] not in (1, batch):
            what = "an image [batch, 3, H, W]" if pixels else f"latents [batch, {channels}, h, w]"
            raise ValueError(
                f"image must be {what} with batch 1 or {batch}, got shape {image.shape}"
            )
        height, width = image.shape[2], image.shape[3]
        init = encode(image)[:, :channels] * scaling if pixels else image
        init = np.broadcast_to(init, (batch,) + init.shape[1:]).astype(np.float32)
    side = config["sample_size"] * factor
    height, width = int(height or side), int(width or side)
    if height % factor or width % factor:
        raise ValueError(
            f"height and width must be multiples of {factor} (the autoencoder's factor), got {height} x {width}"
        )
    shape = (batch, channels, height // factor, width // factor)

    sched = _SCHEDULERS[scheduler](schedule, steps)
    noise = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    first = 0
    if init is None:
        x = (noise * sched.init_sigma).astype(np.float32)
    else:
        first = steps - min(int(steps * strength), steps)
        if first >= steps:
            raise ValueError(f"strength {strength} leaves no denoising step of {steps}")
        x = sched.add_noise(init, noise, first)
    guided = guidance_scale > 1.0
    cond = (
        np.concatenate([_unconditional_ids(ids, config["text_encoder"]["vocab_size"]), ids])
        if guided
        else ids
    )
    for i in range(first, steps):
        x_in = sched.scale_input(x, i)
        if guided:
            x_in = np.concatenate([x_in, x_in])
        t = np.full((x_in.shape[0],), sched.timesteps[i], dtype=np.float32)
        eps = np.asarray(denoise(x_in, t, cond), dtype=np.float32)
        if guided:
            uncond, text = eps[:batch], eps[batch:]
            eps = uncond + guidance_scale * (text - uncond)
        x = sched.step(eps, i, x)
    if not pixels:
        return x
    return np.clip(
        np.asarray(decode((x / scaling).astype(np.float32)), dtype=np.float32), -1.0, 1.0
    )
