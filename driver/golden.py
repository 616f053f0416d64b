"""Golden files: what the compiler emits for the example specs, checked in under
`golden/<case>/`, so any change to generated code shows up as a reviewable diff.

    python -m metagen.golden --update   # rewrite golden/ (`make golden`)
    python -m metagen.golden --check    # unified diff + exit 1 when golden/ is stale

The cases are data: `SPECS` names the example specs; the files made from each are the
golden variants of every backend in the registry (`metagen.backends.registry`). A new
spec is one line here, a new target's golden files one field of its registry entry;
`--check` reports a new variant's golden file as missing until `make golden` writes it.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from dataclasses import dataclass
from functools import partial
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN_DIR = os.path.join(ROOT, "golden")
REGENERATE = "make golden  (or: python -m metagen.golden --update)"
SEED = 0


@dataclass(frozen=True)
class GoldenSpec:
    path: str  # relative to the repository root
    full_ir: bool = False  # also keep the full-size IR (cheap: Repeat keeps it small)
    heavy: bool = False  # its Python targets take many seconds (black on ~100 KB): pytest marks them slow

    @property
    def stem(self) -> str:
        return os.path.splitext(os.path.basename(self.path))[0]


# One line per example spec that compiles today.
SPECS: list[GoldenSpec] = [
    GoldenSpec("examples/tutorial/step1_minimal.yaml"),
    GoldenSpec("examples/tutorial/step3_constraints.yaml"),
    GoldenSpec("examples/tutorial/step4_training.yaml"),
    GoldenSpec("examples/tutorial/step5_image.yaml"),
    GoldenSpec("examples/tutorial/step6_diffusion.yaml", heavy=True),
    GoldenSpec("examples/tutorial/step7_clip.yaml"),
    GoldenSpec("examples/tutorial/pattern_edge.yaml"),
    GoldenSpec("examples/tutorial/pattern_large_lm.yaml"),
    GoldenSpec("examples/tutorial/pattern_audio.yaml"),
    GoldenSpec("examples/tutorial/pattern_taste.yaml"),
    GoldenSpec("examples/tutorial/pattern_video_classifier.yaml"),
    GoldenSpec("examples/tutorial/pattern_text_to_video.yaml", heavy=True),
    GoldenSpec("examples/reference/gpt2_small.yaml", full_ir=True),
    GoldenSpec("examples/reference/llama2_7b.yaml", full_ir=True),
    GoldenSpec("examples/reference/vit_base_patch16.yaml", full_ir=True),
    GoldenSpec("examples/reference/bert_base_classifier.yaml", full_ir=True),
    GoldenSpec("examples/reference/clip_vit_b32.yaml", full_ir=True),
    GoldenSpec("examples/reference/sd15_unet.yaml", full_ir=True, heavy=True),
    GoldenSpec("examples/tabular/house_prices.yaml", full_ir=True),
    GoldenSpec("examples/tabular/churn_ft_transformer.yaml", full_ir=True),
    GoldenSpec("examples/reference/patchtst.yaml", full_ir=True),
    GoldenSpec("examples/timeseries/load_forecaster.yaml"),
    GoldenSpec("examples/timeseries/sensor_anomaly.yaml"),
    GoldenSpec("examples/reference/dqn_atari.yaml", full_ir=True),
    GoldenSpec("examples/rl/ppo_continuous.yaml"),
    GoldenSpec("examples/rl/ppo_discrete.yaml"),
    GoldenSpec("examples/rl/dqn_vector.yaml"),
    GoldenSpec("examples/graph/molecule_gat.yaml"),
    GoldenSpec("examples/graph/citation_gcn.yaml"),
    GoldenSpec("examples/graph/link_gin.yaml"),
    GoldenSpec("examples/graph/solubility_gin.yaml"),
    GoldenSpec("examples/graph/node_regression.yaml"),
    GoldenSpec("examples/reference/resnet50.yaml", full_ir=True),
    GoldenSpec("examples/vision/segmentation_unet.yaml"),
    GoldenSpec("examples/reference/detr_resnet50.yaml", full_ir=True),
    GoldenSpec("examples/vision/dense_detector_edge.yaml"),
    GoldenSpec("examples/vocabulary/review_classifier.yaml"),
    GoldenSpec("examples/retrieval/faq_embedder.yaml"),
    GoldenSpec("examples/retrieval/passage_reranker.yaml"),
    GoldenSpec("examples/retrieval/photo_search.yaml"),
    GoldenSpec("examples/retrieval/movie_recommender.yaml"),
    GoldenSpec("examples/vision/instance_segmentation.yaml"),
]


def example_specs() -> list[str]:
    """Every example spec that compiles: SPECS, the `.mg` twin of each (the DSL
    spelling of the same spec) and the DSL presets (examples/Makefile builds them all)."""
    out = []
    for spec in SPECS:
        out.append(spec.path)
        twin = os.path.splitext(spec.path)[0] + ".mg"
        if os.path.exists(os.path.join(ROOT, twin)):
            out.append(twin)
    presets = os.path.join(ROOT, "examples", "presets")
    if os.path.isdir(presets):  # DSL presets: complete specs that import one another
        out += [f"examples/presets/{n}" for n in sorted(os.listdir(presets)) if n.endswith(".mg")]
    return out


def _main_file(files: dict[str, bytes]) -> bytes:
    return files[""]


@dataclass(frozen=True)
class Variant:
    filename: str
    target: str
    tiny: bool
    render: Callable[[dict[str, bytes]], bytes] = _main_file
    only_full_ir: bool = False


def _rendered(ref: str, files: dict[str, bytes]) -> bytes:
    from metagen.backends import registry

    return registry.resolve(ref)(files)


def _variants() -> list[Variant]:
    from metagen.backends import registry

    return [
        Variant(g.filename, b.name, g.tiny, partial(_rendered, g.render) if g.render else _main_file, g.only_full_ir)
        for b in registry.BACKENDS.values()
        for g in b.goldens
    ]


# Every file kept for each spec, from the backend registry.
VARIANTS: list[Variant] = _variants()


def cases() -> list[tuple[GoldenSpec, Variant]]:
    out = []
    for spec in SPECS:
        for v in VARIANTS:
            if v.only_full_ir and not spec.full_ir:
                continue
            out.append((spec, v))
    return out


def case_name(spec: GoldenSpec, variant: Variant) -> str:
    return f"{spec.stem}/{variant.filename}"


def golden_path(spec: GoldenSpec, variant: Variant) -> str:
    return os.path.join(GOLDEN_DIR, spec.stem, variant.filename)


def render_case(spec: GoldenSpec, variant: Variant, _cache: dict | None = None) -> bytes:
    """What the compiler emits now for one case. Raises CompileError on failure."""
    from metagen.artifacts import emit_target
    from metagen.diagnostics import DiagnosticSink
    from metagen.pipeline import compile_spec

    key = (spec.path, variant.tiny)
    comp = _cache.get(key) if _cache is not None else None
    if comp is None:
        # A relative path, so locations inside the output never name this checkout.
        cwd = os.getcwd()
        os.chdir(ROOT)
        try:
            comp = compile_spec(spec.path, DiagnosticSink(), tiny=variant.tiny)
        finally:
            os.chdir(cwd)
        if _cache is not None:
            _cache[key] = comp
    files = emit_target(comp, variant.target, SEED, data_name="model.onnx.data")
    return variant.render(files)


def diff_text(expected: bytes, actual: bytes, name: str) -> str:
    a = expected.decode("utf-8", "replace").splitlines(keepends=True)
    b = actual.decode("utf-8", "replace").splitlines(keepends=True)
    lines = list(difflib.unified_diff(a, b, f"golden/{name}", f"compiler output ({name})", n=3))
    if len(lines) > 200:
        lines = lines[:200] + [f"... ({len(lines) - 200} more diff lines)\n"]
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def check_case(spec: GoldenSpec, variant: Variant, cache: dict | None = None) -> str | None:
    """None when the golden file matches; otherwise a readable explanation."""
    from metagen.diagnostics import CompileError

    name = case_name(spec, variant)
    try:
        actual = render_case(spec, variant, cache)
    except CompileError as exc:
        return f"{name}: the spec no longer compiles:\n{exc}\n"
    path = golden_path(spec, variant)
    if not os.path.exists(path):
        return f"{name}: golden file missing; regenerate with: {REGENERATE}\n"
    with open(path, "rb") as fh:
        expected = fh.read()
    if expected == actual:
        return None
    return (
        f"{name}: compiler output differs from golden/{name}\n"
        f"{diff_text(expected, actual, name)}"
        f"If the change is intended, regenerate with: {REGENERATE}\n"
    )


def stale_files() -> list[str]:
    """Files under golden/ that no case produces."""
    wanted = {golden_path(s, v) for s, v in cases()}
    wanted.add(os.path.join(GOLDEN_DIR, "README.md"))
    found = []
    for dirpath, _, names in os.walk(GOLDEN_DIR):
        for n in names:
            p = os.path.join(dirpath, n)
            if p not in wanted:
                found.append(os.path.relpath(p, ROOT))
    return sorted(found)


def update(stream=sys.stdout) -> int:
    from metagen.diagnostics import CompileError
    from metagen.outputs import write_if_changed

    active = cases()
    cache: dict = {}
    changed = failed = 0
    for spec, v in active:
        try:
            wrote = write_if_changed(golden_path(spec, v), render_case(spec, v, cache))
        except CompileError as exc:
            print(f"FAILED {case_name(spec, v)}:\n{exc}", file=sys.stderr)
            failed += 1
            continue
        if wrote:
            changed += 1
            print(f"wrote golden/{case_name(spec, v)}", file=stream)
    for p in stale_files():
        os.unlink(os.path.join(ROOT, p))
        print(f"removed {p}", file=stream)
    print(f"{len(active)} golden files, {changed} changed", file=stream)
    return 1 if failed else 0


def check(stream=sys.stdout) -> int:
    active = cases()
    cache: dict = {}
    problems = [msg for s, v in active if (msg := check_case(s, v, cache))]
    problems += [f"{p}: no golden case produces this file; {REGENERATE} removes it\n" for p in stale_files()]
    for msg in problems:
        stream.write(msg)
    if problems:
        print(f"{len(problems)} golden file(s) out of date; regenerate with: {REGENERATE}", file=stream)
        return 1
    print(f"{len(active)} golden files up to date", file=stream)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m metagen.golden", description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--update", action="store_true", help="rewrite golden/ from the compiler's output")
    g.add_argument("--check", action="store_true", help="fail with a unified diff when golden/ is stale")
    g.add_argument("--list-specs", action="store_true", help="the example specs, relative to examples/ (for examples/Makefile)")
    g.add_argument("--list-targets", action="store_true", help="every target in the backend registry")
    g.add_argument("--list-suffixes", action="store_true", help="TARGET=SUFFIX for each of them (metagenc's default output names)")
    args = p.parse_args(argv)
    if args.list_specs:
        print(" ".join(os.path.relpath(p, "examples") for p in example_specs()))
        return 0
    if args.list_targets or args.list_suffixes:
        from metagen.backends import registry

        targets = list(registry.BACKENDS.values())
        print(" ".join(b.name if args.list_targets else f"{b.name}={b.suffix}" for b in targets))
        return 0
    return update() if args.update else check()


if __name__ == "__main__":
    sys.exit(main())
