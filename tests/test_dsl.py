"""The `.mg` DSL: diagnostics, imports, one semantics with YAML, lossless tools.

Every property here is stated against `build_spec(...).to_plain()`: the DSL may
spell a value differently from YAML ("512" vs 512 for a context window), but the
spec both syntaxes build must be the same.
"""

from __future__ import annotations

import glob
import os
import re

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metagen.diagnostics import CompileError, DiagnosticSink
from metagen.frontend import schema as S
from metagen.frontend.dsl import parse_dsl, parse_dsl_file, quote
from metagen.frontend.dsl_format import format_mg, tree_to_mg, tree_to_yaml
from metagen.frontend.loader import load_tree
from metagen.frontend.spec_builder import build_spec
from metagen.frontend.tree import LNode
from metagen.frontend.yaml_frontend import parse_yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
REFERENCE_YAML = sorted(glob.glob(os.path.join(EXAMPLES, "reference", "*.yaml")))
ALL_YAML = sorted(glob.glob(os.path.join(EXAMPLES, "**", "*.yaml"), recursive=True))
ALL_MG = sorted(glob.glob(os.path.join(EXAMPLES, "**", "*.mg"), recursive=True))
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")
FAST = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


def _name(path: str) -> str:
    return os.path.relpath(path, EXAMPLES)


def dsl(text: str, path: str = "spec.mg") -> LNode:
    return parse_dsl(text, path, DiagnosticSink())


def first_error(text: str, path: str = "b.mg") -> str:
    with pytest.raises(CompileError) as info:
        dsl(text, path)
    d = info.value.diagnostics[0]
    return f"{d.loc}: {d.severity}: {d.message}"


def built(tree: LNode) -> tuple[dict, list[tuple[str, str]]]:
    """The spec a tree builds, and its diagnostics without positions."""
    sink = DiagnosticSink()
    spec = build_spec(tree, sink)
    return spec.to_plain(), sorted((d.severity, d.message) for d in sink.items)


_SUBJECT = re.compile(
    r"^(?:'([^']*)'|unknown key \"([^\"]*)\" (?:in '([^']*)'|at the top level)|missing required key '([^']*)')"
)


def built_loosely(tree: LNode) -> tuple[dict, list[tuple[str, ...]]]:
    """The spec, and which field each diagnostic is about.

    For specs that do not build, a message may quote the offending value as
    written: `= 1e5` from YAML (text there) is `= 100000.0` from the DSL (a number).
    """
    plain, diags = built(tree)
    subjects = []
    for severity, message in diags:
        m = _SUBJECT.match(message)
        subjects.append((severity,) + (tuple(g or "" for g in m.groups()) if m else (message,)))
    return plain, sorted(subjects)


def spec_of(path: str) -> dict:
    sink = DiagnosticSink()
    tree, _ = load_tree(path, sink)
    spec = build_spec(tree, sink)
    assert not sink.errors, [str(d.loc) + " " + d.message for d in sink.errors]
    return spec.to_plain()


def typed(node: LNode):
    """A tree without positions but with the quoted flag (it changes meaning)."""
    if node.is_map:
        return {k: typed(v) for k, v in node.value.items()}
    if node.is_list:
        return [typed(v) for v in node.value]
    return (type(node.value).__name__, node.value, node.quoted if isinstance(node.value, str) else None)


# ---------------------------------------------------------------------------
# The language


def test_tutorial_step3_reads_as_the_yaml_does():
    tree = dsl("""
        # A small, fast text model.
        metagen 1.0
        model "my_constrained_model" {
          description "A small, fast text model."
          modality { inputs [text]; outputs [text] }
          constraints {
            parameter_budget { max 500M }
            latency real-time
            device consumer_gpu
            memory_budget 8GB
            context_window 32k
          }
        }
        """)
    yaml_tree = parse_yaml(open(os.path.join(EXAMPLES, "tutorial", "step3_constraints.yaml")).read(), "s.yaml")
    assert tree.to_plain() == yaml_tree.to_plain()
    assert built(tree) == built(yaml_tree)


def test_scalars_are_typed_like_yaml_scalars():
    tree = dsl(
        'model "m" { a 12; b -3; c 1.0e-12; d 1e-5; e true; f false; g null; h 500M; i "12"; j 5 days; '
        'k 8xA100; l [1, two, "3"]; m ∞; n True; o 60   tok/s }'
    )
    v = tree.value
    assert typed(v["a"]) == ("int", 12, None)
    assert typed(v["b"]) == ("int", -3, None)
    assert typed(v["c"]) == ("float", 1e-12, None)
    assert typed(v["d"]) == ("float", 1e-5, None)
    assert (v["e"].value, v["f"].value, v["g"].value) == (True, False, None)
    assert typed(v["h"]) == ("str", "500M", False)
    assert typed(v["i"]) == ("str", "12", True)
    assert typed(v["j"]) == ("str", "5 days", False)
    assert typed(v["k"]) == ("str", "8xA100", False)
    assert typed(v["l"]) == [("int", 1, None), ("str", "two", False), ("str", "3", True)]
    assert typed(v["m"]) == ("str", "∞", False)
    assert typed(v["n"]) == ("str", "True", False)
    assert typed(v["o"]) == ("str", "60 tok/s", False)


def test_positions_of_keys_and_values():
    tree = dsl('metagen 1.0\nmodel "m" {\n  architecture {\n    layers  12\n  }\n}\n')
    assert tree.key_locs["metagen_version"].line == 1
    assert (tree.key_locs["name"].line, tree.key_locs["name"].col) == (2, 1)
    assert (tree.value["name"].loc.line, tree.value["name"].loc.col) == (2, 7)
    arch = tree.value["architecture"]
    assert (tree.key_locs["architecture"].line, tree.key_locs["architecture"].col) == (3, 3)
    assert (arch.key_locs["layers"].line, arch.key_locs["layers"].col) == (4, 5)
    assert (arch.value["layers"].loc.line, arch.value["layers"].loc.col) == (4, 13)


def test_lists_over_lines_commas_optional_at_line_ends():
    tree = dsl('model "m" {\n  l [\n    a\n    b,\n    c\n    , d\n    e,\n  ]\n  m []\n}')
    assert tree.to_plain() == {"name": "m", "l": ["a", "b", "c", "d", "e"], "m": []}


def test_keywords_are_plain_keys_inside_blocks():
    tree = dsl('model "m" { model 1; import 2; metagen 3 }')
    assert tree.to_plain() == {"name": "m", "model": 1, "import": 2, "metagen": 3}


def test_strings_escapes_and_unicode():
    tree = dsl(r'model "a \"b\" \\ c\n\t\u00e9\U0001F600 \ud83d\ude00 ünï" {}')
    assert tree.value["name"].value == 'a "b" \\ c\n\té\U0001f600 \U0001f600 ünï'


@given(st.text(st.characters(exclude_categories=("Cs",)), max_size=40))
@FAST
def test_any_text_round_trips_through_a_quoted_string(text):
    tree = dsl(f"model {quote(text)} {{ description {quote(text)} }}")
    assert tree.value["name"].value == text
    assert tree.value["description"].value == text


def test_crlf_and_bom():
    tree = dsl('\ufeffmetagen 1.0\r\nmodel "m" {\r\n  a 1 # c\r\n}\r\n')
    assert tree.to_plain() == {"metagen_version": "1.0", "name": "m", "a": 1}


def test_duplicate_keys_are_errors():
    assert first_error('model "m" {\n  a 1\n  a 2\n}') == 'b.mg:3:3: error: duplicate key "a" (first written at line 2)'
    assert (
        first_error('model "m" {\n  name "n"\n}') == 'b.mg:2:3: error: duplicate key "name" (first written at line 1)'
    )


# ---------------------------------------------------------------------------
# Syntax errors: in words, at the right place

SYNTAX_ERRORS = [
    (
        'model "x" {\n  latency\n}\n',
        "b.mg:2:10: error: expected a value after 'latency', found a new line (a value starts on the same line as its key)",
    ),
    (
        'model "x" {\n  modality { inputs [text] outputs [text] }\n}',
        "b.mg:2:28: error: expected a new line, ';' or '}' before 'outputs'; write one entry per line or separate entries with ';'",
    ),
    ('model "x" {\n  a 1\n', "b.mg:1:11: error: unclosed '{': no matching '}' before the end of the file"),
    (
        'model "x" {\n  latency: real-time\n}',
        "b.mg:2:10: error: unexpected ':': a key and its value are written side by side, without ':' (e.g. `latency real-time`)",
    ),
    (
        'name "x"\n',
        "b.mg:1:1: error: expected 'metagen', 'import' or 'model' at the top level, found 'name'; "
        "keys and values go inside the `model { ... }` block",
    ),
    (
        'model "x" {\n  a [1, 2}\n}',
        "b.mg:2:10: error: '}' cannot close the '[' opened at line 2, column 5; expected ']'",
    ),
    (
        'model "x" {\n  description "abc\n}',
        "b.mg:2:15: error: unclosed string: a string ends with '\"' on the same line (write a line break as \\n)",
    ),
    ("model 'x' {}", 'b.mg:1:7: error: strings are written in double quotes ("..."), not single quotes'),
    ('model "x" {\n  a 1\n}\n}', "b.mg:4:1: error: unmatched '}': nothing is open here"),
    (
        'model "x"\n{\n}',
        "b.mg:1:10: error: expected '{' to open the model block, found a new line (it goes on the same line as 'model')",
    ),
    (
        "import base.mg",
        "b.mg:1:8: error: expected a file name in double quotes after 'import' (e.g. `import \"base.mg\"`), found 'base.mg'",
    ),
    ('model "x" { a "\\q" }', "b.mg:1:16: error: unknown escape '\\q' in a string; write a backslash as '\\\\'"),
    ('model "x" { a [1,,2] }', "b.mg:1:18: error: expected a list item or ']', found ','"),
    (
        'model "x" { a [1; 2] }',
        "b.mg:1:17: error: expected ',' or ']', found ';'; list items are separated by ',' or new lines",
    ),
    (
        'model "x" { a 1, b 2 }',
        "b.mg:1:16: error: expected a new line, ';' or '}', found ','; ',' separates list items only",
    ),
    ('model "x" { { } }', "b.mg:1:13: error: expected a key or '}', found '{'"),
    (
        "metagen",
        "b.mg:1:8: error: expected the language version after 'metagen' (e.g. `metagen 1.0`), found the end of the file",
    ),
    ('model "x" { a }', "b.mg:1:14: error: expected a value after 'a', found '}'"),
    ('model "x" {}\nmetagen 1.0', "b.mg:2:1: error: the 'metagen' line must come first in the file"),
    ('model "x" {}\nimport "a.mg"', "b.mg:2:1: error: imports must come before the model block"),
    ('model "x" {}\nmodel "y" {}', "b.mg:2:1: error: a file holds one model block; the first starts at line 1"),
    ('model "x" { a "\\ud800" }', "b.mg:1:16: error: '\\ud800' is not a character"),
    ('model "x" { a\u00a0b }', "b.mg:1:14: error: unexpected character U+00A0"),
    ("model " + "{ a " * 70, "b.mg:1:263: error: nesting deeper than 64 levels is not supported"),
]


@pytest.mark.parametrize("source,expected", SYNTAX_ERRORS, ids=[e[1].split(": ", 2)[-1][:40] for e in SYNTAX_ERRORS])
def test_syntax_error_messages(source, expected):
    assert first_error(source) == expected


def test_unclosed_brace_notes_the_likely_culprit():
    with pytest.raises(CompileError) as info:
        dsl('model "x" {\n  constraints {\n    latency batch\n}\n', "b.mg")
    rendered = [f"{d.loc}: {d.severity}: {d.message}" for d in info.value.diagnostics]
    assert rendered == [
        "b.mg:1:11: error: unclosed '{': no matching '}' before the end of the file",
        "b.mg:2:15: note: this '{' is closed by the '}' at line 4, which is indented differently; is a '}' missing here?",
    ]


def test_no_lark_terminal_names_in_messages():
    sources = [s for s, _ in SYNTAX_ERRORS] + ['model "x" { a [b c d] }', "import", 'import "a.mg" "b"', "model", "]"]
    for source in sources:
        with pytest.raises(CompileError) as info:
            dsl(source)
        for d in info.value.diagnostics:
            for name in ("RBRACE", "LBRACE", "RSQB", "LSQB", "_SEP", "_NL", "ATOM", "STRING", "$END", "COMMA", "SEMI"):
                assert name not in d.message, (source, d.message)


def test_semantic_errors_point_into_the_dsl_file():
    tree = dsl(
        'metagen 1.0\nmodel "x" {\n  modality { inputs [text]; outputs [text] }\n  architecture {\n    layrs 12\n    heads many\n  }\n}\n',
        "s.mg",
    )
    _, diags = built(tree)
    sink = DiagnosticSink()
    build_spec(tree, sink)
    got = sorted(f"{d.loc}: {d.message}" for d in sink.errors)
    assert got == [
        's.mg:5:5: unknown key "layrs" in \'architecture\' (did you mean "layers"?)',
        "s.mg:6:11: 'architecture.heads' must be an integer, not a string 'many'",
    ]


# ---------------------------------------------------------------------------
# Imports and overrides


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


BASE = """metagen 1.0
model "base" {
  description "the base"
  modality { inputs [text]; outputs [text] }
  constraints {
    parameter_budget { max 7B }
    context_window 4096
  }
  architecture {
    family transformer
    layers 32
    heads 32
    activation swiglu
    rope_theta 10000
  }
}
"""


def test_import_deep_merges_blocks_and_replaces_values(tmp_path):
    write(tmp_path, "presets/base.mg", BASE)
    spec = write(
        tmp_path,
        "spec.mg",
        'import "presets/base.mg"\nmodel "derived" {\n  constraints { context_window 32k }\n'
        "  architecture { layers 40; rope_theta null }\n  modality { inputs [text, image] }\n}\n",
    )
    sink = DiagnosticSink()
    tree, deps = parse_dsl_file(spec, sink)
    assert deps == [spec, str(tmp_path / "presets" / "base.mg")]
    assert tree.to_plain() == {
        "metagen_version": "1.0",
        "name": "derived",
        "description": "the base",
        "modality": {"inputs": ["text", "image"], "outputs": ["text"]},
        "constraints": {"parameter_budget": {"max": "7B"}, "context_window": "32k"},
        "architecture": {
            "family": "transformer",
            "layers": 40,
            "heads": 32,
            "activation": "swiglu",
            "rope_theta": None,
        },
    }
    # positions stay with the file that wrote each value
    assert tree.value["architecture"].value["heads"].loc.path.endswith("base.mg")
    assert tree.value["architecture"].value["layers"].loc.path == spec
    plain, diags = built(tree)
    assert diags == [] and "rope_theta" not in plain["architecture"] and plain["architecture"]["layers"] == 40


def test_import_order_later_wins_and_diamonds_load_once(tmp_path):
    write(tmp_path, "d.mg", 'model "d" { a 1; b 1; c 1 }')
    write(tmp_path, "b.mg", 'import "d.mg"\nmodel "b" { b 2 }')
    write(tmp_path, "c.mg", 'import "d.mg"\nmodel "c" { c 3 }')
    spec = write(tmp_path, "a.mg", 'import "b.mg"\nimport "c.mg"\nmodel "a" {}')
    tree, deps = parse_dsl_file(spec, DiagnosticSink())
    assert tree.to_plain() == {"name": "a", "a": 1, "b": 1, "c": 3}  # c.mg's d.mg import re-sets b
    assert [os.path.basename(p) for p in deps] == ["a.mg", "b.mg", "d.mg", "c.mg"]


def test_import_of_a_yaml_base(tmp_path):
    write(tmp_path, "base.yaml", 'metagen_version: "1.0"\nname: "y"\nmodality:\n  inputs: [text]\n  outputs: [text]\n')
    spec = write(tmp_path, "s.mg", 'import "base.yaml"\nmodel "s" { modality { outputs [label] } }')
    tree, deps = parse_dsl_file(spec, DiagnosticSink())
    assert tree.to_plain()["modality"] == {"inputs": ["text"], "outputs": ["label"]}
    assert len(deps) == 2


def import_error(tmp_path, files: dict[str, str], main: str) -> list[str]:
    for name, text in files.items():
        write(tmp_path, name, text)
    with pytest.raises(CompileError) as info:
        parse_dsl_file(str(tmp_path / main), DiagnosticSink())
    return [
        f"{os.path.relpath(d.loc.path, tmp_path)}:{d.loc.line}:{d.loc.col}: {d.severity}: {d.message}"
        for d in info.value.diagnostics
    ]


def test_import_cycle_is_diagnosed_at_the_import(tmp_path):
    got = import_error(
        tmp_path, {"a.mg": 'metagen 1.0\nimport "b.mg"\nmodel "a" {}', "b.mg": 'import "a.mg"\nmodel "b" {}'}, "a.mg"
    )
    assert got[0].startswith('b.mg:1:8: error: import cycle: "a.mg" imports itself (')
    assert got[0].endswith("a.mg -> " + str(tmp_path / "b.mg") + " -> " + str(tmp_path / "a.mg") + ")")
    assert got[1] == 'a.mg:2:8: note: in the file imported here ("b.mg")'


def test_self_import_is_a_cycle(tmp_path):
    got = import_error(tmp_path, {"a.mg": 'import "./a.mg"\nmodel "a" {}'}, "a.mg")
    assert got[0].startswith('a.mg:1:8: error: import cycle: "./a.mg" imports itself')


def test_missing_import_is_diagnosed_at_the_import(tmp_path):
    got = import_error(tmp_path, {"a.mg": 'metagen 1.0\n\nimport "nope/base.mg"\nmodel "a" {}'}, "a.mg")
    assert got == [f'a.mg:3:8: error: cannot import "nope/base.mg": no such file ({tmp_path / "nope" / "base.mg"})']
    got = import_error(tmp_path, {"c.mg": 'import "notes.txt"\nmodel "c" {}'}, "c.mg")
    assert got == ['c.mg:1:8: error: cannot import "notes.txt": specs are .mg, .yaml, .yml or .json files']


def test_odd_import_names(tmp_path):
    got = import_error(tmp_path, {"a.mg": 'import "x\\0.mg"\nmodel "a" {}'}, "a.mg")
    assert got == ["a.mg:1:8: error: an import's file name cannot hold control characters"]
    got = import_error(tmp_path, {"b.mg": 'import ""\nmodel "b" {}'}, "b.mg")
    assert got == ["b.mg:1:8: error: import needs a file name"]


def test_errors_inside_an_imported_file_point_into_it(tmp_path):
    files = {"base.mg": 'model "b" {\n  a 1\n  b\n}\n', "main.mg": 'import "base.mg"\nmodel "m" {}\n'}
    for name, text in files.items():
        write(tmp_path, name, text)
    sink = DiagnosticSink()
    with pytest.raises(CompileError) as info:
        parse_dsl_file(str(tmp_path / "main.mg"), sink)
    got = [
        f"{os.path.basename(d.loc.path)}:{d.loc.line}:{d.loc.col}: {d.severity}: {d.message}"
        for d in info.value.diagnostics
    ]
    assert got == [
        "base.mg:3:4: error: expected a value after 'b', found a new line (a value starts on the same line as its key)",
        'main.mg:1:8: note: in the file imported here ("base.mg")',
    ]
    assert str(tmp_path / "base.mg") in sink.sources  # so the caret can be shown


def test_semantic_errors_from_an_imported_file_point_into_it(tmp_path):
    write(tmp_path, "base.mg", 'model "b" {\n  architecture { layrs 3 }\n}\n')
    spec = write(
        tmp_path, "main.mg", 'metagen 1.0\nimport "base.mg"\nmodel "m" { modality { inputs [text]; outputs [text] } }\n'
    )
    sink = DiagnosticSink()
    tree, _ = parse_dsl_file(spec, sink)
    build_spec(tree, sink)
    assert [(os.path.basename(d.loc.path), d.loc.line, d.loc.col) for d in sink.errors] == [("base.mg", 2, 18)]


def test_presets_build_the_reference_specs():
    assert spec_of(os.path.join(EXAMPLES, "presets", "llama2_7b.mg")) == spec_of(
        os.path.join(EXAMPLES, "reference", "llama2_7b.yaml")
    )
    assert spec_of(os.path.join(EXAMPLES, "presets", "gpt2_small.mg")) == spec_of(
        os.path.join(EXAMPLES, "reference", "gpt2_small.yaml")
    )
    long = spec_of(os.path.join(EXAMPLES, "presets", "llama2_7b_32k.mg"))
    assert long["constraints"]["context_window"] == 32768 and long["architecture"]["rope_theta"] == 1000000.0
    assert long["architecture"]["hidden_size"] == 4096  # from llama2_7b.mg
    assert long["architecture"]["norm"] == "rmsnorm"  # from llama_base.mg, two imports away


# ---------------------------------------------------------------------------
# One semantics: twins, conversion both ways


def test_there_are_examples():
    assert len(REFERENCE_YAML) >= 9  # at least main's seven, resnet50 and detr_resnet50
    assert len(ALL_MG) >= len(ALL_YAML)


@pytest.mark.parametrize("yaml_path", ALL_YAML, ids=_name)
def test_every_yaml_example_has_a_twin_that_builds_the_same_spec(yaml_path):
    twin = yaml_path[: -len(".yaml")] + ".mg"
    assert os.path.exists(twin), f"{_name(twin)} is missing"
    assert spec_of(twin) == spec_of(yaml_path)


def compiled_ir(path: str, tiny: bool):
    """The IR a spec compiles to, or the messages it fails with."""
    from metagen.artifacts import emit_target
    from metagen.pipeline import compile_spec

    try:
        return emit_target(compile_spec(path, DiagnosticSink(), tiny=tiny), "ir", seed=0)
    except CompileError as exc:
        return [d.message for d in exc.diagnostics]


TWINS = [(y, y[: -len(".yaml")] + ".mg") for y in ALL_YAML] + [
    (os.path.join(EXAMPLES, "reference", f"{n}.yaml"), os.path.join(EXAMPLES, "presets", f"{n}.mg"))
    for n in ("llama2_7b", "gpt2_small")
]


@pytest.mark.parametrize("yaml_path,mg_path", TWINS, ids=[_name(m) for _, m in TWINS])
def test_twins_compile_to_identical_output(yaml_path, mg_path):
    tiny = "reference" not in yaml_path  # the reference specs at full size, the rest as built by --tiny
    assert compiled_ir(mg_path, tiny) == compiled_ir(yaml_path, tiny)


@pytest.mark.parametrize("mg_path", ALL_MG, ids=_name)
def test_every_mg_example_is_canonical(mg_path):
    text = open(mg_path, encoding="utf-8").read()
    assert format_mg(text, mg_path, DiagnosticSink()) == text


def round_trip(tree0: LNode) -> tuple[str, LNode, str, LNode]:
    mg = tree_to_mg(tree0)
    tree1 = dsl(mg, "converted.mg")
    text = tree_to_yaml(tree1)
    tree2 = parse_yaml(text, "converted.yaml")
    return mg, tree1, text, tree2


@pytest.mark.parametrize("yaml_path", ALL_YAML, ids=_name)
def test_yaml_to_dsl_to_yaml_builds_the_same_spec(yaml_path):
    tree0 = parse_yaml(open(yaml_path, encoding="utf-8").read(), yaml_path)
    mg, tree1, text, tree2 = round_trip(tree0)
    assert built(tree0) == built(tree1) == built(tree2)
    assert format_mg(mg, "converted.mg", DiagnosticSink()) == mg  # a converted file is canonical
    assert tree_to_mg(tree1) == mg and tree_to_mg(tree2) == mg  # and conversion is stable
    assert tree_to_yaml(tree2) == text


def test_converted_reference_reads_well():
    tree = parse_yaml(open(os.path.join(EXAMPLES, "reference", "gpt2_small.yaml")).read(), "g.yaml")
    mg = tree_to_mg(tree)
    assert mg.startswith('metagen 1.0\n\nmodel "gpt2_small" {\n  description "GPT-2 small')
    for line in (
        "    parameter_budget { max 125M }",
        "    context_window 1024",
        "  training { objective [autoregressive] }",
        "    activation gelu_tanh",
        "    norm_eps 1e-5",
        "    tie_embeddings true",
    ):
        assert line + "\n" in mg


# -- property-based: spec trees generated from the schema ----------------------

_UNIT_SAMPLES = {
    S.PARAMS: ["500M", "1.5B", "70B", "125000000", "50m", "7b", "1.2T"],
    S.BYTES: ["8GB", "512MB", "24 GB", "1TB", "16GiB"],
    S.CONTEXT: ["32k", "4096", "128k", "1M", "77", "infinite"],
    S.LATENCY: list(S.LATENCY_WORDS) + ["10ms", "60 tok/s", "2 img/s", "30fps"],
    S.RATE: ["60 tok/s", "2 img/s", "30fps", "5 samples/s"],
    S.DURATION: ["5 days", "12 hours", "2 weeks", "90min"],
    S.HARDWARE: ["8xA100", "512xH100", "H100", "8 x A100"],
    S.DATA_SIZE: ["100B tokens", "1.28M samples", "5M", "300B tokens"],
}
_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
_ODD = st.one_of(
    st.integers(-5, 10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    _TEXT,
    st.booleans(),
    st.none(),
    st.sampled_from(["1e-5", "1e5", "512", "yes", "null", "true", "1_000", "0x10", "-", "a b", "x: y"]),
)


def _valid(f: S.Field):
    kind = f.kind
    if kind == S.MAP:
        required = {m.name: _value(m) for m in f.fields if m.required}
        optional = {m.name: _value(m) for m in f.fields if not m.required}
        return st.fixed_dictionaries(required, optional=optional)
    if kind == S.LIST:
        return st.lists(_value(f.item), min_size=1, max_size=3)
    if kind == S.STR:
        if f.choices:
            return st.sampled_from(f.choices)
        return st.one_of(_TEXT, st.sampled_from(["synthetic", "licensed", "sft", "fine-tuned", "1.5", "8"]))
    if kind == S.ENUM:
        return st.sampled_from(f.choices)
    if kind == S.BOOL:
        return st.booleans()
    if kind == S.INT:
        lo = int(f.minimum) if f.minimum is not None else 0
        hi = int(f.maximum) if f.maximum is not None else 10**9
        return st.integers(lo, min(hi, lo + 10**6))
    if kind == S.FLOAT:
        lo = f.minimum if f.minimum is not None else 0.0
        hi = f.maximum if f.maximum is not None else 1e6
        return st.one_of(
            st.floats(lo, hi, allow_nan=False),
            st.sampled_from(["1e-5", "1e-12", "1e3"]).filter(lambda s: lo <= float(s) <= hi),
        )
    return st.sampled_from(_UNIT_SAMPLES[kind])


def _value(f: S.Field):
    if f.name == "metagen_version":
        return st.just("1.0")
    if f.kind == S.MAP:
        return _valid(f)
    return st.one_of(_valid(f), _valid(f), _valid(f), _ODD)  # mostly valid, sometimes not


def _with_unknown_keys(spec: dict, extra: dict) -> dict:
    return {**spec, **{f"x_{k}": v for k, v in extra.items()}}


SPEC_TREES = st.builds(
    _with_unknown_keys, _valid(S.SPEC), st.dictionaries(st.sampled_from(["a", "bb", "model"]), _ODD, max_size=2)
)


def _name_as_text(loose: tuple[dict, list]) -> tuple[dict, list]:
    """The DSL's model name is text by its syntax: YAML's `name: 0` (a number, warned
    about because the schema says string) converts to `model "0"`, which is not."""
    plain, subjects = loose
    return plain, [s for s in subjects if s[:2] != ("warning", "name")]


@given(SPEC_TREES)
@FAST
def test_generated_specs_convert_both_ways_to_the_same_spec(plain):
    text = yaml.safe_dump(plain, sort_keys=False, allow_unicode=True)
    tree0 = parse_yaml(text, "gen.yaml")
    mg, tree1, text2, tree2 = round_trip(tree0)
    assert _name_as_text(built_loosely(tree0)) == built_loosely(tree1) == built_loosely(tree2)
    if not built(tree0)[1]:
        assert built(tree0) == built(tree1) == built(tree2)
    assert format_mg(mg, "converted.mg", DiagnosticSink()) == mg
    assert tree_to_mg(tree1) == mg


@given(SPEC_TREES)
@FAST
def test_dsl_trees_survive_yaml_exactly(plain):
    """A tree read from the DSL keeps its types and quoting through YAML and back."""
    tree1 = dsl(tree_to_mg(parse_yaml(yaml.safe_dump(plain, sort_keys=False), "gen.yaml")))
    tree2 = parse_yaml(tree_to_yaml(tree1), "back.yaml")
    assert built_loosely(tree1) == built_loosely(tree2)
    assert dsl(tree_to_mg(tree2)).to_plain() == tree1.to_plain()


# ---------------------------------------------------------------------------
# fmt

MESSY = """   # file comment

metagen   1.0   # version
import "a.mg"
model "x" {  # the model
  description "caf\\u00e9"
  # about modality


  modality { inputs [text]; outputs [text] }
  constraints { parameter_budget { max 500M }
    latency    real-time
    throughput   60   tok/s

    # dangling
  }
  training { objective [autoregressive]   # why
  }
  sources [
    a   # first
    b
  ]
  e {

  }
}
# end
"""

MESSY_FORMATTED = """# file comment

metagen 1.0  # version

import "a.mg"

model "x" {  # the model
  description "café"
  # about modality

  modality {
    inputs [text]
    outputs [text]
  }
  constraints {
    parameter_budget { max 500M }
    latency real-time
    throughput 60 tok/s

    # dangling
  }
  training { objective [autoregressive] }  # why
  sources [
    a,  # first
    b,
  ]
  e {}
}
# end
"""


def test_fmt_layout():
    assert format_mg(MESSY, "m.mg", DiagnosticSink()) == MESSY_FORMATTED
    assert format_mg(MESSY_FORMATTED, "m.mg", DiagnosticSink()) == MESSY_FORMATTED


def test_fmt_keeps_the_tree():
    before = dsl(MESSY.replace('import "a.mg"\n', ""))
    after = dsl(MESSY_FORMATTED.replace('import "a.mg"\n', ""))
    assert typed(before) == typed(after)


def test_fmt_breaks_long_lists_and_keeps_short_ones():
    items = ", ".join(f"item_{i:02d}" for i in range(12))
    out = format_mg(f'model "m" {{\n  a [{items}]\n  b [x, y]\n}}\n', "m.mg", DiagnosticSink())
    assert "  a [\n    item_00,\n" in out and "    item_11,\n  ]\n" in out and "  b [x, y]\n" in out


def test_fmt_reports_syntax_errors():
    with pytest.raises(CompileError):
        format_mg('model "m" {', "m.mg", DiagnosticSink())


def test_fmt_of_nothing():
    assert format_mg("", "e.mg", DiagnosticSink()) == ""
    assert format_mg("\n# only a comment\n\n", "e.mg", DiagnosticSink()) == "# only a comment\n"


# ---------------------------------------------------------------------------
# Fuzz: any input gives a tree or a CompileError, never a traceback

_PIECES = st.sampled_from(
    [
        "{",
        "}",
        "[",
        "]",
        ",",
        ";",
        "\n",
        " ",
        "\t",
        "#",
        '"',
        "'",
        "\\",
        ":",
        "=",
        "model",
        "metagen",
        "import",
        "a",
        "1",
        "1.0e-5",
        "5 days",
        '"x"',
        '"\\u12"',
        "é",
        "\r",
        "\x00",
        "\u2028",
        "true",
        "null",
        "-",
        "+",
        ".",
    ]
)
RANDOM_SOURCES = st.one_of(st.text(max_size=60), st.lists(_PIECES, max_size=40).map("".join))


def check_any_source(source: str, tmp_path=None) -> None:
    path = os.path.join(str(tmp_path), "fuzz.mg") if tmp_path is not None else "fuzz.mg"
    try:
        tree = parse_dsl(source, path, DiagnosticSink())
    except CompileError as exc:
        assert exc.diagnostics and all(d.loc.line >= 1 and d.loc.col >= 1 for d in exc.diagnostics)
        return
    build_spec(tree, DiagnosticSink())  # may report errors, never raises
    formatted = format_mg(source, path, DiagnosticSink())
    assert format_mg(formatted, path, DiagnosticSink()) == formatted
    assert typed(parse_dsl(formatted, path, DiagnosticSink())) == typed(tree)


@given(RANDOM_SOURCES)
@FAST
def test_fuzz_random_text(source):
    check_any_source(source)


def _examples_text() -> list[str]:
    return [open(p, encoding="utf-8").read() for p in ALL_MG if "presets" not in p]


@st.composite
def mutated_examples(draw):
    text = draw(st.sampled_from(_examples_text()))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["delete", "insert", "replace"]))
        n = draw(st.integers(1, 6))
        piece = draw(_PIECES)
        if op == "delete":
            text = text[:i] + text[i + n :]
        elif op == "insert":
            text = text[:i] + piece + text[i:]
        else:
            text = text[:i] + piece + text[i + n :]
    return text


@given(mutated_examples())
@settings(max_examples=80, deadline=None)
def test_fuzz_mutated_examples(source):
    check_any_source(source)


def test_fuzz_deep_nesting_and_size():
    for source in [
        "[" * 5000,
        "{" * 5000,
        'model "m" { a ' + "[" * 2000 + "]" * 2000 + " }",
        'model "m" {\n' + "  a 1\n" * 1000 + "}",
    ]:
        check_any_source(source)


def test_tree_to_mg_refuses_a_non_mapping():
    with pytest.raises(CompileError):
        tree_to_mg(parse_yaml("[1, 2]", "l.yaml"))


def test_the_reference_shows_the_grammar_as_it_is():
    doc = open(os.path.join(ROOT, "docs", "dsl.md"), encoding="utf-8").read()
    grammar = open(os.path.join(ROOT, "grammar", "metagen.lark"), encoding="utf-8").read()
    rules = [line for line in grammar.splitlines() if line.strip() and not line.lstrip().startswith("//")]
    missing = [line for line in rules if line not in doc]
    assert not missing, f"docs/dsl.md section 5 is out of date: {missing}"
