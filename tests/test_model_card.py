"""The model card `metagen synth` writes (README.md) and `metagen verify RUN_DIR` updates:
Hugging Face's format, figures equal to the compiler's records, deterministic."""

from __future__ import annotations

import json
import os
import re

import pytest
import yaml

from conftest import example
from metagen.cli import main

GPT2 = example("reference/gpt2_small.yaml")


def _synth(tmp_path, spec, *extra) -> str:
    out = tmp_path / "runs"
    assert main(["synth", spec, "--tiny", "--out", str(out), *extra]) == 0
    (run,) = os.listdir(out)
    return str(out / run)


def _card(run: str) -> str:
    with open(os.path.join(run, "README.md"), encoding="utf-8") as f:
        return f.read()


def _front_matter(card: str) -> dict:
    m = re.match(r"---\n(.*?)\n---\n", card, re.S)
    assert m, card[:200]
    return yaml.safe_load(m.group(1))


def _section(card: str, title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", card, re.S | re.M)
    assert m, title
    return m.group(1)


def test_card_front_matter_and_figures_are_the_compilers(tmp_path):
    run = _synth(tmp_path, GPT2)
    card = _card(run)
    meta = _front_matter(card)
    assert meta["library_name"] == "metagen" and meta["pipeline_tag"] == "text-generation"
    assert {"metagen", "decoder_lm", "pytorch", "onnx", "autoregressive", "tiny"} <= set(meta["tags"])
    assert "license" not in meta  # the spec states none
    with open(os.path.join(run, "blueprint", "params_estimate.json"), encoding="utf-8") as f:
        est = json.load(f)
    params = _section(card, "Parameters")
    assert f"{est['total_params']:,} parameters" in params
    # every module's table adds up to the count its heading states, and the top's to the total
    sections = re.findall(r"^### (`\w+`.*?)\n\n(.*?)(?=^### |\Z)", params, re.S | re.M)
    assert len(sections) == 4  # Attention, MLP, Block, the top
    for heading, body in sections:
        stated = int(heading.rsplit(": ", 1)[1].replace(",", ""))
        rows = [r for r in body.strip().split("\n")[2:] if r.startswith("|")]
        counted = sum(int(r.split("|")[4].split("(")[0].strip().replace(",", "")) for r in rows)
        assert counted == stated, heading
    assert re.search(rf"^### `Gpt2Small` \(top\): {est['total_params']:,}$", params, re.M)
    assert "| `blocks` | 2 x `Block` |" in params
    memory = _section(card, "Memory and latency estimates")
    for phase in ("inference", "training"):
        for part, n in est["memory"][phase].items():
            assert f"| {phase} | {part.replace('_', ' ')} |" in memory and f"| {n:,} |" in memory
    assert "Latency: not estimated (`--tiny`)." in memory
    assert f"`{est['binding_constraint']}`" in _section(card, "Binding constraint")
    with open(os.path.join(run, "blueprint", "training_report.json"), encoding="utf-8") as f:
        train = json.load(f)
    training = _section(card, "Training")
    assert f"| learning_rate | {train['config']['learning_rate']} |" in training
    assert f"{train['estimate']['training_flops']:.3e} FLOPs" in training
    assert "maps text -> text with objective `autoregressive` or none" in _section(card, "Family")
    diagram = _section(card, "Module structure")
    assert "```mermaid\ngraph TD\n" in diagram and '-->|"blocks x2"|' in diagram and '-->|"attn"|' in diagram
    assert "Not run." in _section(card, "Verification")
    with open(os.path.join(run, "spec_resolved.yaml"), encoding="utf-8") as f:
        assert f.read().rstrip("\n") in _section(card, "Spec")


def test_card_license_comes_from_the_spec(tmp_path):
    spec = tmp_path / "lm.yaml"
    with open(GPT2, encoding="utf-8") as f:
        text = f.read()
    spec.write_text(text.replace('name:', 'license: "apache-2.0"\nname:', 1), encoding="utf-8")
    assert _front_matter(_card(_synth(tmp_path, str(spec))))["license"] == "apache-2.0"


@pytest.mark.slow
def test_card_states_the_familys_own_limitation(tmp_path):
    card = _card(_synth(tmp_path, example("tutorial/step6_diffusion.yaml")))
    assert _front_matter(card)["pipeline_tag"] == "text-to-image"
    assert "- Latent-space U-Net with its CLIP text encoder; no image autoencoder unless images: pixels." in _section(card, "Limitations")


def test_card_is_deterministic(tmp_path):
    a = _card(_synth(tmp_path / "a", GPT2, "--seed", "5"))
    b = _card(_synth(tmp_path / "b", GPT2, "--seed", "5"))
    assert a == b and "`init(5)`" in a
    assert str(tmp_path) not in a  # no path of this machine


def test_misspelt_license_key_is_located(tmp_path, capsys):
    spec = tmp_path / "m.yaml"
    spec.write_text('metagen_version: "1.0"\nname: "m"\nlicence: "mit"\nmodality:\n  inputs: [text]\n  outputs: [text]\n')
    assert main(["validate", str(spec), "--tiny"]) == 1
    err = capsys.readouterr().err
    assert "m.yaml:3:1" in err and "license" in err


@pytest.mark.slow  # a real verify: torch, flax (jit) and onnxruntime; the card update alone is tested below
def test_verify_run_dir_records_its_result_in_the_card(tmp_path, capsys):
    run = _synth(tmp_path, GPT2, "--seed", "3")
    before = _card(run)
    capsys.readouterr()
    assert main(["verify", run]) == 0
    printed = capsys.readouterr().out
    after = _card(run)
    section = _section(after, "Verification")
    assert "`metagen verify` passed" in section and "`init(3)`" in section
    table = printed[: printed.index("OK\n") + 3]
    assert table in section  # what verify printed, nothing else
    # only the verification section changed
    strip = lambda c: re.sub(r"<!-- metagen verify: begin -->.*<!-- metagen verify: end -->", "", c, flags=re.S)
    assert strip(before) == strip(after)
    from metagen.model_card import VERIFY_BEGIN, VERIFY_END, with_verification

    body = after[after.index(VERIFY_BEGIN):after.index(VERIFY_END)].split("## Verification\n\n", 1)[1]
    assert with_verification(after, body) == after  # recording the same result again changes nothing


def test_verify_run_dir_records_a_failure(tmp_path, monkeypatch, capsys):
    import metagen.verify as verify

    def failing(comp, seed=0, stream=None):
        print("verify Gpt2Small: ...\nMISMATCH", file=stream)
        return False

    run = _synth(tmp_path, GPT2)
    monkeypatch.setattr(verify, "verify_spec", failing)
    assert main(["verify", run]) == 1
    section = _section(_card(run), "Verification")
    assert "`metagen verify` FAILED" in section and "MISMATCH" in section


def test_verify_run_dir_takes_no_changes(tmp_path, capsys):
    run = _synth(tmp_path, GPT2)
    before = _card(run)
    assert main(["verify", run, "-D", "architecture.layers=1"]) == 2
    assert "verified as it was built" in capsys.readouterr().err and _card(run) == before


def test_verify_run_dir_without_a_card_writes_one(tmp_path, monkeypatch):
    import metagen.verify as verify

    monkeypatch.setattr(verify, "verify_spec", lambda comp, seed=0, stream=None: print("OK", file=stream) or True)
    run = _synth(tmp_path, GPT2)
    os.remove(os.path.join(run, "README.md"))
    assert main(["verify", run]) == 0
    card = _card(run)
    assert _front_matter(card)["library_name"] == "metagen" and "`metagen verify` passed" in card


@pytest.mark.parametrize("spec", ["tutorial/step7_clip.yaml", "tutorial/step5_image.yaml", "tutorial/pattern_taste.yaml"])
def test_every_family_gets_a_card(tmp_path, spec):
    card = _card(_synth(tmp_path, example(spec)))
    meta = _front_matter(card)
    assert meta["library_name"] == "metagen"
    for title in ("Family", "Architecture", "Parameters", "Module structure", "Memory and latency estimates",
                  "Binding constraint", "Training", "Intended use", "Limitations", "Verification", "Spec"):
        _section(card, title)


@pytest.mark.parametrize(
    "spec, task",
    [
        ("tabular/house_prices.yaml", "tabular-regression"),
        ("tabular/churn_ft_transformer.yaml", "tabular-classification"),
        ("rl/dqn_vector.yaml", "reinforcement-learning"),
    ],
)
def test_pipeline_tag_is_the_familys_hub_task(spec, task):
    from metagen.model_card import front_matter
    from metagen.pipeline import compile_spec

    assert front_matter(compile_spec(example(spec), tiny=True)).get("pipeline_tag") == task


def test_families_without_a_hub_counterpart_get_no_pipeline_tag():
    from metagen.compiler.families import FAMILIES

    assert FAMILIES["two_tower"].pipeline_tag == "" and FAMILIES["fallback"].pipeline_tag == ""
    assert all(f.pipeline_tag for n, f in FAMILIES.items() if n not in ("two_tower", "fallback", "tabular"))
