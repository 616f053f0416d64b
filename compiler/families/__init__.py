"""Model families: each turns a resolved architecture into IR, and says how its
free dimensions scale so the fitter can size it.

A family registers itself when its class is defined (families/base.py); importing
its module is all this package does. The order below is the catalogue's order: the
table in docs/families.md and the list a spec no family matches is shown.
"""

from __future__ import annotations

from metagen.compiler.families.base import FAMILIES, ArchConfig, Family, Knobs, Rule  # noqa: F401
from metagen.compiler.families import decoder_lm, vit, encoder, clip, fallback, unet, audio, cnn, segmentation, detection, instance_seg  # noqa: F401,E402
from metagen.compiler.families import tabular, timeseries, rl, graph  # noqa: F401,E402
from metagen.compiler.families import embedder, ranker, recommender  # noqa: F401,E402
from metagen.compiler.families import video, video_unet  # noqa: F401,E402
