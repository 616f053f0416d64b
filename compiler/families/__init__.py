"""Model families: each turns a resolved architecture into IR, and says how its
free dimensions scale so the fitter can size it."""

from __future__ import annotations

from metagen.compiler.families.base import FAMILIES, Family, get_family  # noqa: F401
from metagen.compiler.families import decoder_lm  # noqa: F401  (registers itself)
from metagen.compiler.families import vit, encoder, clip, fallback  # noqa: F401,E402  (register themselves)
from metagen.compiler.families import unet, audio  # noqa: F401,E402  (register themselves)
