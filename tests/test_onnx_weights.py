"""ONNX at any size: parameters are always initializers under the canonical names,
inline below protobuf's limit, in external data above it, graph only above the size
`metagen synth` draws (`metagen weights init` writes them later); the weights are
streamed one tensor at a time and stay bit-identical to every backend's init(seed).
The size thresholds are lowered here so all of it runs at test scale."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import onnx
import pytest

import onnxruntime as ort  # noqa: E402

from conftest import example, load_module  # noqa: E402

from metagen import cli  # noqa: E402
from metagen.backends import onnx_backend, registry  # noqa: E402
from metagen.backends.onnx_backend import lower_to_onnx  # noqa: E402
from metagen.ir.builder import ModelBuilder  # noqa: E402
from metagen.ir.graph import ONES, ZEROS, Init, InputSpec, const, normal, uniform  # noqa: E402
from metagen.ir.types import DType, TensorType  # noqa: E402
from metagen.outputs import Streamed  # noqa: E402
from metagen.generate import complete_inputs  # noqa: E402
from metagen.pipeline import compile_spec  # noqa: E402

GPT2 = example("reference", "gpt2_small.yaml")


@functools.lru_cache(maxsize=1)
def _tiny_gpt2():
    return compile_spec(GPT2, tiny=True).model


def _ort(path_or_bytes, feed):
    """The ONNX outputs on `feed`, its optional inputs (a decoder LM's mask,
    positions and empty caches) filled in as the generated modules default them."""
    feed = complete_inputs(_tiny_gpt2(), feed)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(path_or_bytes, so, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, feed)))


def _initializers(files: dict, folder) -> dict[str, np.ndarray]:
    """name -> array of an ONNX file set, external data read from `folder`."""
    for rel, data in files.items():
        (folder / (rel or "model.onnx")).write_bytes(data)
    proto = onnx.load(str(folder / "model.onnx"))
    return {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}


def _every_scheme_model():
    """x + one parameter of each init scheme (the examples draw only normal, zeros,
    ones and const)."""
    mb = ModelBuilder()
    b = mb.module("Schemes")
    x = b.input("x", TensorType(DType.f32, ("batch", 6)))
    inits = {
        "n": normal(0.02),
        "t": Init("trunc_normal", (("std", 0.7),)),
        "u": uniform(0.3),
        "z": ZEROS,
        "o": ONES,
        "c": const(0.125),
    }
    y = x
    for name, init in inits.items():
        y = b.op("add", y, b.param(name, (6,), init), hint="y")
    top = b.ret(y, names=["y"])
    return mb.finish(
        top,
        name="Schemes",
        spec_name="every init scheme",
        inputs=[InputSpec("x", TensorType(DType.f32, ("batch", 6)), "normal", 0.0, 0.0)],
        config={},
        family="test",
        symbols={"batch": "batch"},
        examples={},
    )


def _modules(model, tmp_path) -> dict:
    """The generated torch, flax and numpy modules of `model`, loaded."""
    out = {}
    for name in ("torch", "flax", "numpy"):
        path = tmp_path / f"{name}_model.py"
        path.write_bytes(registry.get(name).lower(model)[""])
        out[name] = load_module(str(path))
    return out


@pytest.mark.parametrize("which", ["schemes", "gpt2", "clip"])
def test_initializers_are_bit_identical_to_every_backends_init(which, tmp_path):
    if which == "schemes":
        model = _every_scheme_model()
    else:
        model = compile_spec(GPT2 if which == "gpt2" else example("reference", "clip_vit_b32.yaml"), tiny=True).model
    mods = _modules(model, tmp_path)
    seed = 11
    want = {name: mod.to_canonical(mod.init(seed)) for name, mod in mods.items()}
    for form in onnx_backend.FORMS[:2]:  # inline and external, streamed by 2 threads
        folder = tmp_path / form
        folder.mkdir()
        got = _initializers(lower_to_onnx(model, seed=seed, form=form, workers=2), folder)
        assert list(got) == [n for n, _ in model.walk_params()]
        for backend, tensors in want.items():
            assert sorted(tensors) == sorted(got), backend
            for name, arr in got.items():
                ref = np.asarray(tensors[name])
                assert ref.dtype == arr.dtype == np.float32 and ref.shape == arr.shape, (backend, name)
                assert ref.tobytes() == arr.tobytes(), f"{backend} {name}: init({seed}) differs from the ONNX initializer"


def test_forms_run_alike_and_point_where_they_say(tmp_path):
    model = compile_spec(GPT2, tiny=True).model
    feed = {"input_ids": np.arange(12, dtype=np.int64).reshape(2, 6) % model.config["vocab_size"]}
    inline = lower_to_onnx(model, seed=2)
    assert list(inline) == [""] and onnx_backend.onnx_form(model, False) == "inline"
    external = lower_to_onnx(model, seed=2, form="external", data_name="x.onnx.data")
    assert sorted(external) == ["", "x.onnx.data"]
    for rel, data in external.items():
        (tmp_path / (rel or "x.onnx")).write_bytes(data)
    proto = onnx.load(str(tmp_path / "x.onnx"), load_external_data=False)
    assert [i.name for i in proto.graph.input] == [i.name for i in model.inputs]  # no initializer among them
    assert all(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    onnx.checker.check_model(str(tmp_path / "x.onnx"), full_check=True)
    assert np.array_equal(_ort(str(tmp_path / "x.onnx"), feed)["logits"], _ort(inline[""], feed)["logits"])
    # graph only: the external form's graph, no data, the seed in its metadata
    (graph_only,) = lower_to_onnx(model, seed=2, materialize_limit=1000, data_name="x.onnx.data").values()
    g = onnx.load_from_string(graph_only)
    assert g.graph.node == proto.graph.node and g.graph.initializer == proto.graph.initializer
    assert {p.key: p.value for p in g.metadata_props}[onnx_backend.INIT_SEED_PROP] == "2"
    # given weights are never left out, whatever their size
    weights = {n: np.full(p.type.shape, 0.5, np.float32) for n, p in model.walk_params()}
    assert list(lower_to_onnx(model, weights=weights, materialize_limit=1000)) == [""]


def test_streamed_writes_equal_the_in_memory_bytes_for_any_thread_count(tmp_path):
    model = compile_spec(GPT2, tiny=True).model
    for form in ("inline", "external"):
        want = lower_to_onnx(model, seed=4, form=form, workers=1)
        for workers in (2, 5):
            files = lower_to_onnx(model, seed=4, form=form, stream=True, workers=workers)
            assert sorted(files) == sorted(want)
            for rel, data in files.items():
                if isinstance(data, Streamed):
                    # the first write takes the weights drawn ahead since lower_to_onnx, a second draws afresh
                    writes = []
                    for i in range(2):
                        path = tmp_path / f"{form}{workers}{rel}{i}.bin"
                        with open(path, "wb") as fh:
                            data.write(fh)
                        writes.append(path.read_bytes())
                    assert writes[0] == writes[1], (form, workers, rel)
                    data = writes[0]
                assert data == want[rel], (form, workers, rel)


def test_the_onnx_writer_imports_neither_the_python_emitters_nor_black():
    """`metagenc --target onnx` is timed against torch.onnx.export as a whole process
    (bench part 6): black alone took ~0.17 s of its ~0.5 s of imports."""
    code = "import sys, metagen.backends.onnx_backend; print(sorted({'black', 'metagen.backends.pyemit'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_weight_writing_holds_about_one_tensor_not_the_model(tmp_path, monkeypatch):
    """Peak traced memory (numpy reports its buffers to tracemalloc) while writing a
    ~24 MB model whose largest tensor is 2 MB: a few tensors, far from the model."""
    over = ["architecture.hidden_size=256", "architecture.layers=8", "architecture.heads=4", "architecture.vocab_size=2048",
            "constraints.parameter_budget.max=100M"]
    model = compile_spec(GPT2, overrides=[tuple(o.split("=")) for o in over]).model
    sizes = [p.numel * 4 for _, p in model.walk_params()]
    largest, total = max(sizes), sum(sizes)
    assert total > 10 * largest
    monkeypatch.setattr(onnx_backend, "AHEAD_BYTES", 0)  # made ahead: at most the largest tensor
    for form in ("inline", "external"):
        files = lower_to_onnx(model, seed=0, form=form, stream=True, workers=2)
        streamed = [v for v in files.values() if isinstance(v, Streamed)]
        assert len(streamed) == 1
        tracemalloc.start()
        try:
            with open(tmp_path / f"{form}.bin", "wb") as fh:
                streamed[0].write(fh)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert os.path.getsize(tmp_path / f"{form}.bin") >= total
        assert peak < 5 * largest < total / 2, f"{form}: peak {peak} bytes, largest tensor {largest}, model {total}"


# ------------------------------------------------------------------ synth and `metagen weights init`


def _synth(tmp_path, *extra, run_id="r"):
    code = cli.main(["synth", GPT2, "--tiny", "--out", str(tmp_path), "--run-id", run_id, *extra])
    assert code == 0
    return tmp_path / run_id


def _close(a, b):
    return bool(np.all(np.abs(a - b) <= 1e-5 + 1e-4 * np.abs(b)))


def test_synth_above_the_limit_writes_the_graph_and_weights_init_finishes_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(onnx_backend, "MATERIALIZE_LIMIT", 1000)
    run = _synth(tmp_path, "--seed", "3")
    assert "metagen weights init" in capsys.readouterr().out
    assert sorted(os.listdir(run / "onnx")) == ["genai_config.json", "model.onnx"]
    graph_only = (run / "onnx" / "model.onnx").read_bytes()
    assert cli.main(["weights", "init", str(run)]) == 0  # the seed synth used, read from the graph
    assert "init(seed=3)" in capsys.readouterr().out
    assert sorted(os.listdir(run / "onnx")) == ["genai_config.json", "model.onnx", "model.onnx.data"]
    on_disk = onnx.load(str(run / "onnx" / "model.onnx"), load_external_data=False)
    assert on_disk.graph.initializer == onnx.load_from_string(graph_only).graph.initializer  # still points there
    mod = load_module(str(run / "code" / "torch" / "model.py"))
    feed = mod.example_inputs(batch_size=2, seed=1)
    assert _close(_ort(str(run / "onnx" / "model.onnx"), feed)["logits"], mod.run(mod.init(3), feed)["logits"])
    data = (run / "onnx" / "model.onnx.data").read_bytes()
    assert cli.main(["weights", "init", str(run), "--seed", "9"]) == 0
    assert (run / "onnx" / "model.onnx.data").read_bytes() != data
    assert _close(_ort(str(run / "onnx" / "model.onnx"), feed)["logits"], mod.run(mod.init(9), feed)["logits"])


def test_synth_above_the_protobuf_limit_writes_external_data(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_backend, "PROTOBUF_LIMIT", 1000)
    run = _synth(tmp_path, "--seed", "2")
    assert sorted(os.listdir(run / "onnx")) == ["genai_config.json", "model.onnx", "model.onnx.data"]
    mod = load_module(str(run / "code" / "torch" / "model.py"))
    feed = mod.example_inputs(batch_size=2, seed=1)
    assert _close(_ort(str(run / "onnx" / "model.onnx"), feed)["logits"], mod.run(mod.init(2), feed)["logits"])
    model = compile_spec(GPT2, tiny=True).model
    assert (run / "onnx" / "model.onnx.data").read_bytes() == lower_to_onnx(model, seed=2)["model.onnx.data"]


def test_weights_init_rewrites_a_small_run_inline(tmp_path, capsys):
    run = _synth(tmp_path)
    assert cli.main(["weights", "init", str(run), "--seed", "6"]) == 0
    assert "onnx/model.onnx (" in capsys.readouterr().out
    assert sorted(os.listdir(run / "onnx")) == ["genai_config.json", "model.onnx"]
    mod = load_module(str(run / "code" / "torch" / "model.py"))
    feed = mod.example_inputs(batch_size=1, seed=0)
    assert _close(_ort(str(run / "onnx" / "model.onnx"), feed)["logits"], mod.run(mod.init(6), feed)["logits"])


def test_weights_init_refuses_what_it_cannot_finish(tmp_path, capsys):
    assert cli.main(["weights", "init", str(tmp_path / "missing")]) == 1
    assert f"{tmp_path / 'missing'}:1:1: error: not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main(["weights", "init", str(tmp_path / "empty")]) == 1
    assert "no spec_resolved.yaml" in capsys.readouterr().err
    run = _synth(tmp_path)
    spec = run / "spec_resolved.yaml"
    spec.write_text(spec.read_text().replace("layers: 2", "layers: 3"))
    before = (run / "onnx" / "model.onnx").read_bytes()
    assert cli.main(["weights", "init", str(run)]) == 1
    assert "not the one spec_resolved.yaml compiles to" in capsys.readouterr().err
    assert (run / "onnx" / "model.onnx").read_bytes() == before
    os.unlink(run / "onnx" / "model.onnx")
    spec.write_text(spec.read_text().replace("layers: 3", "layers: 2"))
    assert cli.main(["weights", "init", str(run)]) == 1
    assert "has no ONNX model" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["weights"])
    assert exc.value.code == 2


def test_weights_init_on_a_run_whose_pinned_dimensions_kept_it_under_the_default_minimum(tmp_path):
    """A default parameter minimum (90% of max) the pinned dimensions kept the model
    under does not refuse the run's own spec_resolved.yaml when it is compiled again."""
    small = ["architecture.layers=1", "architecture.hidden_size=32", "architecture.heads=2", "architecture.vocab_size=64"]
    code = cli.main(["synth", GPT2, "--out", str(tmp_path), "--run-id", "r", *[a for d in small for a in ("-D", d)]])
    assert code == 0
    assert cli.main(["weights", "init", str(tmp_path / "r")]) == 0


def test_weights_init_keeps_the_runs_precision(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_backend, "MATERIALIZE_LIMIT", 1000)
    run = _synth(tmp_path, "--precision", "fp16")
    assert sorted(os.listdir(run / "onnx")) == ["genai_config.json", "model.onnx"]
    assert cli.main(["weights", "init", str(run)]) == 0
    proto = onnx.load(str(run / "onnx" / "model.onnx"))
    assert {t.data_type for t in proto.graph.initializer} == {onnx.TensorProto.FLOAT16}
    mod = load_module(str(run / "code" / "torch" / "model.py"))
    feed = mod.example_inputs(batch_size=2, seed=1)
    from metagen.precision import within

    assert within(_ort(str(run / "onnx" / "model.onnx"), feed)["logits"], mod.run(mod.init(0), feed)["logits"], "fp16")
