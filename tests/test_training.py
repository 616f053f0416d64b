"""Training: objectives as IR, the generated torch and flax training programs
(falling loss, cross-backend loss and gradient agreement, checkpoints, resume,
torchrun/FSDP2 and a 2-device JAX mesh) and the compute-feasibility estimate."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import torch  # noqa: E402

from conftest import example, load_module  # noqa: E402

from metagen.compiler.cost import model_flops  # noqa: E402
from metagen.compiler.objectives import OBJECTIVES, build_loss, training_estimate  # noqa: E402
from metagen.diagnostics import DiagnosticSink  # noqa: E402
from metagen.ir.verify import verify_model  # noqa: E402
from metagen.pipeline import compile_spec  # noqa: E402
from metagen.synth import synth_files  # noqa: E402

BIN = os.path.dirname(sys.executable)
STEP4 = example("tutorial", "step4_training.yaml")


def close(a, b) -> bool:
    """CONTRACT §5: |a - b| <= 1e-5 + 1e-4 |b|."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= 1e-5 + 1e-4 * np.abs(b)))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny runs are latency-bound; several OpenMP threads on a loaded 2-core CI
    machine make them 20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """`metagen synth --tiny` of tutorial step 4, written out."""
    root = tmp_path_factory.mktemp("synth")
    comp = compile_spec(STEP4, tiny=True)
    for rel, data in synth_files(comp, 0).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


@pytest.fixture(scope="module")
def torch_train(run_dir):
    return load_module(str(run_dir / "code/torch/train.py"))


@pytest.fixture(scope="module")
def flax_train(run_dir):
    return load_module(str(run_dir / "code/flax/train.py"))


@pytest.fixture(scope="module")
def torch_run(torch_train, tmp_path_factory):
    """30 steps of the torch program on synthetic data; (history, checkpoint dir)."""
    ck = tmp_path_factory.mktemp("torch_ck")
    history = torch_train.train(["--synthetic", "--steps", "30", "--log-every", "1", "--checkpoint-dir", str(ck)])
    return history, ck


# ---------------------------------------------------------------- objectives


def test_every_objective_builds_a_verified_loss_graph():
    comp = compile_spec(STEP4, tiny=True)
    loss = build_loss(comp.ctx)
    assert loss.objective == "autoregressive"
    verify_model(loss.loss)
    ops_used = [n.op for n in loss.loss.top_module.nodes]
    assert ops_used == ["slice", "slice", "cross_entropy"]
    assert loss.sources == [("output", "logits"), ("batch", "input_ids")]
    assert set(OBJECTIVES) >= {"autoregressive", "classification", "diffusion", "contrastive"}


def test_next_token_loss_is_shifted_cross_entropy(torch_train):
    rng = np.random.default_rng(0)
    seq = torch_train.TRAIN["seq_len"]
    logits = torch.from_numpy(rng.standard_normal((2, seq, 256)).astype(np.float32))
    ids = torch.from_numpy(rng.integers(0, 256, (2, seq)))
    got = torch_train.LOSS(logits, ids)["loss"]
    want = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 256), ids[:, 1:].reshape(-1))
    assert torch.allclose(got, want)


# ---------------------------------------------------------------- programs


def test_synth_emits_both_programs_and_report(run_dir):
    for rel in ("code/torch/train.py", "code/flax/train.py", "blueprint/training_report.json"):
        assert (run_dir / rel).exists(), rel
    report = json.loads((run_dir / "blueprint/training_report.json").read_text())
    assert report["config"]["optimizer"] == "adamw" and report["config"]["schedule"] == "cosine"
    assert report["loss"]["objective"] == "autoregressive"
    assert report["config"]["world_size"] == 8  # "8xA100"


def test_training_files_are_deterministic():
    from metagen.training import training_files

    a = training_files(compile_spec(STEP4, tiny=True), 0)
    b = training_files(compile_spec(STEP4, tiny=True), 0)
    assert a == b


def test_spec_config_is_honoured(tmp_path):
    from metagen.training import training_report

    overrides = [
        ("training.config.learning_rate", "0.01"),
        ("training.config.batch_size", "16"),
        ("training.config.warmup", "3"),
        ("training.config.schedule", "linear"),
        ("training.config.weight_decay", "0.0"),
        ("training.config.steps", "77"),
    ]
    report, _, cfg = training_report(compile_spec(STEP4, tiny=True, overrides=overrides), 0)
    assert (cfg["learning_rate"], cfg["batch_size"], cfg["warmup"], cfg["schedule"]) == (0.01, 16, 3, "linear")
    assert (cfg["weight_decay"], cfg["steps"]) == (0.0, 77)


def test_torch_loss_falls(torch_run):
    history, ck = torch_run
    losses = [loss for _, loss in history]
    assert len(losses) == 30
    assert losses[-1] < losses[0] - 1.0, losses
    assert (ck / "model.safetensors").exists() and json.loads((ck / "trainer_state.json").read_text())["step"] == 30


def test_flax_loss_falls_and_tracks_torch(flax_train, torch_run, tmp_path):
    history = flax_train.train(["--synthetic", "--steps", "30", "--log-every", "1", "--checkpoint-dir", str(tmp_path)])
    flax_losses = [loss for _, loss in history]
    torch_losses = [loss for _, loss in torch_run[0]]
    assert flax_losses[-1] < flax_losses[0] - 1.0
    # Same batches, same schedule, AdamW composed identically: the runs agree.
    assert close(flax_losses[0], torch_losses[0])
    assert abs(flax_losses[-1] - torch_losses[-1]) < 1e-3 * abs(torch_losses[-1])


def test_torch_and_flax_loss_and_gradients_agree(torch_train, flax_train):
    batch = torch_train.DataSource(None, 0).batch(0, 4)
    model = torch_train.M.init(0).train()
    loss_t = torch_train.compute_loss(model, torch_train.to_tensors(batch, "cpu"))
    loss_t.backward()
    grads_t = {name: p.grad.numpy() for name, p in model.named_parameters()}
    loss_f, grads_f = flax_train.loss_and_grads(flax_train.M.init(0), batch)
    assert close(loss_f, loss_t.item()), (loss_f, loss_t.item())
    assert set(grads_f) == set(grads_t)
    for name in grads_t:
        assert close(grads_f[name], grads_t[name]), name


def test_checkpoint_loads_into_flax_and_onnx(torch_run, torch_train, flax_train, tmp_path):
    import onnxruntime as ort
    from safetensors.numpy import load_file

    _, ck = torch_run
    weights = load_file(str(ck / "model.safetensors"))
    inputs = torch_train.M.example_inputs(2, seed=1)
    want = torch_train.M.run(torch_train.M.load_canonical(weights), inputs)["logits"]
    got_flax = flax_train.M.run(flax_train.M.load_canonical(weights), inputs)["logits"]
    assert close(got_flax, want)
    out = tmp_path / "trained.onnx"
    subprocess.run(
        [os.path.join(BIN, "metagenc"), STEP4, "--tiny", "--target", "onnx", "--weights", str(ck / "model.safetensors"), "-o", str(out)],
        check=True,
    )
    sess = ort.InferenceSession(str(out))
    got_onnx = sess.run(["logits"], inputs)[0]
    assert close(got_onnx, want)


def test_resume_from_a_mid_run_checkpoint(torch_train, tmp_path):
    full = torch_train.train(["--synthetic", "--steps", "6", "--log-every", "1", "--checkpoint-dir", str(tmp_path / "full")])
    ck = str(tmp_path / "half")
    # A 6-step schedule stopped after 3 steps...
    torch_train.train(["--synthetic", "--steps", "6", "--log-every", "1", "--checkpoint-dir", ck, "--stop-after", "3"])
    resumed = torch_train.train(["--synthetic", "--steps", "6", "--log-every", "1", "--checkpoint-dir", ck, "--resume"])
    assert [s for s, _ in resumed] == [4, 5, 6]
    for (s1, a), (s2, b) in zip(full[3:], resumed):
        assert s1 == s2 and close(b, a), (a, b)


def test_bad_data_flags_are_usage_errors(torch_train, capsys):
    with pytest.raises(SystemExit) as exc:
        torch_train.parse_args(["--synthetic", "--data", "x.npy"])
    assert exc.value.code == 2 and "exclude" in capsys.readouterr().err


def test_data_file_of_bytes(torch_train, tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_bytes(b"the quick brown fox jumps over the lazy dog. " * 50)
    batch = torch_train.DataSource(str(text), 0).batch(0, 4)
    ids = batch["input_ids"]
    assert ids.shape == (4, torch_train.TRAIN["seq_len"]) and ids.dtype == np.int64
    assert set(np.unique(ids)) <= set(b"the quick brown fox jumps over the lazy dog.")


# ---------------------------------------------------------------- distributed


@pytest.mark.slow
def test_torchrun_two_processes_match_single_process(run_dir, torch_train, tmp_path):
    single = torch_train.train(["--synthetic", "--steps", "4", "--log-every", "1", "--checkpoint-dir", str(tmp_path / "one")])
    r = subprocess.run(
        [os.path.join(BIN, "torchrun"), "--nproc_per_node", "2", str(run_dir / "code/torch/train.py"),
         "--synthetic", "--steps", "4", "--log-every", "1", "--checkpoint-dir", str(tmp_path / "two")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    logged = [line.split() for line in r.stdout.splitlines() if line.startswith("step ")]
    assert [int(w[1]) for w in logged] == [1, 2, 3, 4]
    for (_, want), words in zip(single, logged):
        assert close(float(words[3]), want), (words, want)
    from safetensors.numpy import load_file

    a, b = load_file(str(tmp_path / "one/model.safetensors")), load_file(str(tmp_path / "two/model.safetensors"))
    assert set(a) == set(b)


@pytest.mark.slow
def test_jax_two_host_devices_match_one(run_dir, tmp_path):
    losses = {}
    for n in (1, 2):
        env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
        r = subprocess.run(
            [sys.executable, str(run_dir / "code/flax/train.py"), "--synthetic", "--steps", "4", "--log-every", "1",
             "--devices", str(n), "--checkpoint-dir", str(tmp_path / str(n))],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"({n} devices)" in r.stdout
        losses[n] = [float(line.split()[3]) for line in r.stdout.splitlines() if line.startswith("step ")]
    assert len(losses[2]) == 4
    for a, b in zip(losses[2], losses[1]):
        assert close(a, b), (a, b)


# ---------------------------------------------------------------- feasibility


def test_feasibility_warns_at_the_duration():
    sink = DiagnosticSink()
    comp = compile_spec(STEP4, sink=sink)
    est = comp.ctx.report["training"]
    n = comp.model.param_count()
    assert est["training_flops"] == 6 * n * 100e9
    assert est["hardware"] == {"count": 8, "accelerator": "A100", "peak_flops_each": 312e12}
    want = 6 * n * 100e9 / (8 * 312e12 * 0.4)
    assert abs(est["estimated_seconds"] - want) < 1e-6 * want
    warnings = [d for d in sink.warnings if "training.compute.duration" in d.message]
    assert len(warnings) == 1
    w = warnings[0]
    assert (w.loc.line, w.loc.col) == (19, 15)
    assert "needs about" in w.message and "days" in w.message


def test_feasibility_no_warning_when_duration_holds():
    sink = DiagnosticSink()
    compile_spec(STEP4, sink=sink, overrides=[("training.compute.duration", "30 days")])
    assert not [d for d in sink.warnings if "training.compute.duration" in d.message]


def test_feasibility_of_the_70b_pattern():
    comp = compile_spec(example("tutorial", "pattern_large_lm.yaml"))
    est = comp.ctx.report["training"]
    assert est["hardware"]["count"] == 512
    plan = est["parallel_plan"]
    assert (plan["nodes"], plan["nproc_per_node"]) == (64, 8)
    # No data size in the spec: compute-optimal 20 tokens per parameter, ~1.4T tokens,
    # about a month on 512 H100s at 40% MFU.
    assert est["data"]["amount"] == 20 * est["parameters"]
    assert 20 * 86400 < est["estimated_seconds"] < 50 * 86400


def test_model_flops_of_decoder_is_about_2n_per_token():
    comp = compile_spec(STEP4)
    seq = comp.ctx.arch["context"]
    f = model_flops(comp.model, {"batch": 1, "seq": seq, "past": 0})
    per_token = f / seq
    n = comp.model.param_count()
    assert 2 * n * 0.8 < per_token < 2 * n * 1.5


def test_params_estimate_carries_training():
    comp = compile_spec(STEP4, tiny=True)
    files = synth_files(comp, 0)
    est = json.loads(files["blueprint/params_estimate.json"])
    assert "training" in est and est["training"]["data"]["unit"] == "tokens"
    assert training_estimate(comp.ctx)["parameters"] == comp.model.param_count()


def _programs(tmp_path, spec):
    comp = compile_spec(spec, tiny=True)
    for rel, data in synth_files(comp, 0).items():
        if rel.startswith("code/"):
            path = tmp_path / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    return load_module(str(tmp_path / "code/torch/train.py")), load_module(str(tmp_path / "code/flax/train.py"))


SLOW = pytest.mark.slow  # jit-compiling the conv towers' gradients takes a minute or more
FAMILY_SPECS = [
    pytest.param("tutorial", "step5_image.yaml", marks=SLOW, id="vit-classification"),
    pytest.param("reference", "bert_base_classifier.yaml", id="encoder-classification"),
    pytest.param("tutorial", "step6_diffusion.yaml", marks=SLOW, id="unet-diffusion"),
    pytest.param("tutorial", "step7_clip.yaml", marks=SLOW, id="clip-contrastive"),
    pytest.param("tutorial", "pattern_audio.yaml", id="audio-autoregressive"),
    pytest.param("tutorial", "pattern_video_classifier.yaml", marks=SLOW, id="video-classification"),
    pytest.param("tutorial", "pattern_text_to_video.yaml", marks=SLOW, id="video-diffusion"),
]


@pytest.mark.parametrize("where,name", FAMILY_SPECS)
def test_every_objective_agrees_across_backends_and_trains(where, name, tmp_path):
    torch_train, flax_train = _programs(tmp_path, example(where, name))
    batch = torch_train.DataSource(None, 0).batch(0, 4)
    model = torch_train.M.init(0).train()
    loss_t = torch_train.compute_loss(model, torch_train.to_tensors(batch, "cpu"))
    loss_t.backward()
    loss_f, grads_f = flax_train.loss_and_grads(flax_train.M.init(0), batch)
    assert close(loss_f, loss_t.item()), (loss_f, loss_t.item())
    for n, p in model.named_parameters():
        assert close(grads_f[n], p.grad.numpy()), n
    history = torch_train.train(["--synthetic", "--steps", "3", "--batch-size", "4", "--checkpoint-dir", str(tmp_path / "ck")])
    assert [s for s, _ in history] == [1, 3] and all(np.isfinite(v) for _, v in history)


MASKED_SPEC = """\
metagen_version: "1.0"
name: "tiny_mlm"
modality:
  inputs: ["text"]
  outputs: ["text"]
training:
  objective: ["masked"]
"""


def test_masked_objective_masks_agrees_across_backends_and_learns(tmp_path):
    spec = tmp_path / "mlm.yaml"
    spec.write_text(MASKED_SPEC)
    torch_train, flax_train = _programs(tmp_path, str(spec))
    assert torch_train.M.OUTPUTS == ["logits"]
    assert [tuple(s) for s in torch_train.LOSS_SOURCES[1:]] == [("batch", "labels"), ("batch", "mask")]
    batch = torch_train.DataSource(None, 0).batch(0, 4)
    hidden = batch["mask"].astype(bool)
    mask_id = torch_train.M.CONFIG["vocab_size"] - 1
    assert hidden.any(axis=1).all()  # at least one masked token per row
    assert (batch["input_ids"][hidden] == mask_id).all()
    assert (batch["input_ids"][~hidden] == batch["labels"][~hidden]).all()
    model = torch_train.M.init(0).train()
    loss_t = torch_train.compute_loss(model, torch_train.to_tensors(batch, "cpu"))
    loss_t.backward()
    loss_f, grads_f = flax_train.loss_and_grads(flax_train.M.init(0), batch)
    assert close(loss_f, loss_t.item()), (loss_f, loss_t.item())
    for n, p in model.named_parameters():
        assert close(grads_f[n], p.grad.numpy()), n
    # The loss is the one a fixed batch can be fitted with: it falls far below log(vocab).
    bt = torch_train.to_tensors(batch, "cpu")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss = torch_train.compute_loss(model, bt)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.25 * first, (first, loss.item())


def test_accelerator_variants_take_their_own_peak():
    """A100-80GB is an A100 (longest matching name), not the A10 that comes first."""
    from metagen.compiler.objectives import ACCELERATORS, accelerator_peak

    assert accelerator_peak("A10080GB") == ACCELERATORS["A100"].peak
    assert accelerator_peak("A10G") == ACCELERATORS["A10G"].peak
    assert accelerator_peak("A10") == ACCELERATORS["A10"].peak
    assert accelerator_peak("H100SXM") == ACCELERATORS["H100"].peak
    assert accelerator_peak("FOO") is None
