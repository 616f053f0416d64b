"""format_python lays out the `_INITS`/`_PARAMS` tables itself (black is superlinear in one huge
statement); its output must stay exactly black's."""

import black
import pytest

from metagen.backends import registry
from metagen.backends.pyemit import BLACK_MODE, _split_row_table, format_python

from conftest import example


def _black(src: str) -> str:
    return black.format_str(src, mode=BLACK_MODE)


TABLE_SRC = """import numpy as np
CONFIG = {'a': 1}
_INITS = [
    ('tok.weight', [32000, 768], 'normal', {'std': 0.02}),
    ('blocks.0.norm.bias', [768], 'zeros', {}),
    ('scale', [], 'const', {'value': 2.6592600345611572}),
    ('down_blocks.0.resnets.1.time_emb_proj_with_a_very_long_canonical_name.weight', [1280, 1280], 'trunc_normal', {'std': 0.02}),
]
def f(x):
  return x
"""


def test_fast_path_is_black():
    table, _ = _split_row_table(TABLE_SRC, "_INITS")
    assert table is not None  # the fast path is taken, long row included
    assert format_python(TABLE_SRC) == _black(TABLE_SRC)


@pytest.mark.parametrize("row", ["    ('it\\'s', [1], 'ones', {}),", '    (\'say "hi"\', [1], \'ones\', {}),'])
def test_strings_black_would_requote_take_the_slow_path(row):
    src = TABLE_SRC.replace("    ('blocks.0.norm.bias', [768], 'zeros', {}),", row)
    assert _split_row_table(src, "_INITS")[0] is None
    assert format_python(src) == _black(src)


@pytest.mark.parametrize("target", [b.name for b in registry.BACKENDS.values() if b.suffix.endswith(".py")])
@pytest.mark.parametrize("spec", [("reference", "gpt2_small.yaml"), ("tutorial", "step6_diffusion.yaml")])
def test_generated_modules_are_black(spec, target, compiled):
    path, _ = compiled(example(*spec), target)
    text = path.read_text()
    assert _black(text) == text
