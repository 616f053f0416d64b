"""The canonical initial weights' code, embedded verbatim in every generated module
(pyemit) and executed once by the ONNX backend, which draws with it directly.

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
