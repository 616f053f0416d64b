"""The numpy code every backend shares: the canonical initial weights and DETR's sine
position table, embedded verbatim in every generated module (pyemit) and executed
once by the ONNX backend, which draws and tabulates with it directly.

A module of its own so the ONNX writer imports it without the Python emitters (and
black, which they import)."""

# Canonical initial weights: numpy only, one generator per parameter seeded by
# (seed, crc32(name)), so every backend draws the same bits in any order.
INIT_FUNCTIONS = '''
def _draw(name, shape, scheme, args, seed):
    rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
    if scheme == "normal":
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(args["std"])
    if scheme == "trunc_normal":
        x = rng.standard_normal(shape, dtype=np.float32)
        return np.clip(x, -2.0, 2.0) * np.float32(args["std"])
    if scheme == "uniform":
        b = args["bound"]
        return rng.uniform(-b, b, size=shape).astype(np.float32)
    if scheme == "zeros":
        return np.zeros(shape, dtype=np.float32)
    if scheme == "ones":
        return np.ones(shape, dtype=np.float32)
    if scheme == "const":
        return np.full(shape, args["value"], dtype=np.float32)
    raise ValueError(f"unknown init scheme {scheme}")


def init_arrays(seed=0):
    """The canonical initial weights as numpy arrays, name -> array."""
    return {name: _draw(name, shape, scheme, args, seed) for name, shape, scheme, args in _INITS}
'''


# DETR's sine position table, in NumPy: the Python backends embed this source as a
# helper (their rule wraps its result in their array type) and the ONNX backend runs it
# to make a constant, so every backend has the very same numbers.
SINE_POSITIONS_SOURCE = '''
def _sine_positions_2d(height, width, features, temperature, scale):
    """[1, height * width, 2 * features]: sin/cos of the normalized (row + 1, col + 1)
    over temperature^(2 floor(k / 2) / features), the y half first (DETR)."""
    y = np.arange(1, height + 1, dtype=np.float64) / (height + 1e-6) * scale
    x = np.arange(1, width + 1, dtype=np.float64) / (width + 1e-6) * scale
    dim_t = temperature ** (2 * (np.arange(features) // 2) / features)
    even = np.arange(features) % 2 == 0

    def embed(coord):
        a = coord[:, None] / dim_t
        return np.where(even, np.sin(a), np.cos(a))

    py = np.broadcast_to(embed(y)[:, None, :], (height, width, features))
    px = np.broadcast_to(embed(x)[None, :, :], (height, width, features))
    return np.concatenate([py, px], axis=-1).reshape(1, height * width, 2 * features)
'''


def _run(source: str, name: str):
    """Function `name` of `source`, executed here with the names it uses."""
    import zlib

    import numpy as np

    ns = {"np": np, "zlib": zlib}
    exec(source, ns)
    return ns[name]


draw = _run(INIT_FUNCTIONS, "_draw")  # the very `_draw` every generated module embeds
sine_positions_2d = _run(SINE_POSITIONS_SOURCE, "_sine_positions_2d")


def canonical_init(model, seed: int) -> dict:
    """init(seed)'s canonical weights of `model` (name -> float32 array), drawn here:
    bit-identical to every generated module's `init(seed)`, with no module emitted."""
    return {
        name: draw(name, tuple(p.type.shape), p.init.scheme, dict(p.init.args), seed)
        for name, p in model.walk_params()
    }
