"""Tokenizers: `metagen tokenizer train` (byte-level BPE), `train.py --tokenizer`, and
the tokenizer through `metagen export hf` / `import hf`."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("tokenizers")

from conftest import load_module  # noqa: E402
from metagen import tokenizer as T  # noqa: E402
from metagen.cli import main  # noqa: E402

WORDS = ["the", "cat", "sat", "on", "mat", "dog", "ran", "fast", "compiler", "token", "naïve", "日本"]

# A small decoder LM with GPT-2's conventions and room for a byte-level vocabulary.
LM = """metagen_version: "1.0"
name: "tok_lm"
modality:
  inputs: ["text"]
  outputs: ["text"]
constraints:
  parameter_budget:
    max: "200K"
  context_window: "16"
training:
  objective: ["autoregressive"]
architecture:
  family: "transformer"
  vocab_size: 300
  hidden_size: 32
  layers: 1
  heads: 2
  ffn_size: 64
  position: "learned"
  activation: "gelu_tanh"
  norm: "layernorm"
  bias: true
  tie_embeddings: true
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    lines = [" ".join(WORDS[i] for i in rng.integers(0, len(WORDS), 12)) for _ in range(300)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _train(tmp_path, corpus, vocab=300, *extra) -> str:
    out = str(tmp_path / "tokenizer.json")
    assert main(["tokenizer", "train", "--data", str(corpus), "--vocab-size", str(vocab), "-o", out, *extra]) == 0
    return out


def test_train_is_byte_level_bpe_deterministic_and_loads_in_transformers(tmp_path, corpus):
    a = _train(tmp_path / "a", corpus)
    b = _train(tmp_path / "b", corpus)
    assert open(a, "rb").read() == open(b, "rb").read()
    assert T.vocab_size(a) == 300  # the data has more merges than room
    assert T.special_tokens(a) == {"bos_token": ("<|endoftext|>", 0), "eos_token": ("<|endoftext|>", 0)}
    text = "the cat naïve 日本 zebra \x01"  # unseen words and bytes still round-trip: no unknown token
    ids = T.encode(a, text)
    assert T.decode(a, ids) == text and max(ids) < 300
    assert len(T.encode(a, "the compiler")) < len("the compiler".encode())  # merges learned
    transformers = pytest.importorskip("transformers")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=a)
    assert fast(text, add_special_tokens=False)["input_ids"] == ids


def test_special_tokens_come_first(tmp_path, corpus):
    path = _train(tmp_path, corpus, 300, "--special-tokens", "<unk>,<s>,</s>")
    roles = T.special_tokens(path)
    assert roles["unk_token"] == ("<unk>", 0) and roles["bos_token"] == ("<s>", 1) and roles["eos_token"] == ("</s>", 2)


def test_train_refuses_bad_input_and_writes_nothing(tmp_path, corpus, capsys):
    out = tmp_path / "t.json"
    assert main(["tokenizer", "train", "--data", str(corpus), "--vocab-size", "100", "-o", str(out)]) == 2
    assert "the smallest is 257" in capsys.readouterr().err
    binary = tmp_path / "b.bin"
    binary.write_bytes(b"\xff\xfe\x00abc")
    assert main(["tokenizer", "train", "--data", str(binary), "--vocab-size", "300", "-o", str(out)]) == 1
    assert f"{binary}:1:1: error: not UTF-8 text" in capsys.readouterr().err
    assert main(["tokenizer", "train", "--data", str(tmp_path / "none.txt"), "--vocab-size", "300", "-o", str(out)]) == 1
    assert "cannot read the training text" in capsys.readouterr().err
    assert not out.exists()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    (root / "lm.yaml").write_text(LM, encoding="utf-8")
    assert main(["synth", str(root / "lm.yaml"), "--out", str(root / "runs"), "--run-id", "r"]) == 0
    return root / "runs" / "r"


def test_train_py_reads_text_as_tokens(tmp_path, corpus, run):
    tok = _train(tmp_path, corpus)
    train = load_module(str(run / "code" / "torch" / "train.py"))
    ids = np.asarray(T.encode(tok, corpus.read_text(encoding="utf-8")))
    batch = train.DataSource(str(corpus), 0, tok).batch(0, 4)["input_ids"]
    assert batch.shape == (4, 16) and batch.max() >= 256  # merged tokens, not bytes
    for row in batch:  # every row is a window of the encoded text
        hits = np.flatnonzero(ids[: len(ids) - 16] == row[0])
        assert any(np.array_equal(ids[h : h + 16], row) for h in hits)
    history = train.train(["--data", str(corpus), "--tokenizer", tok, "--steps", "2", "--batch-size", "2",
                           "--checkpoint-dir", str(tmp_path / "ck")])
    assert len(history) == 2 and all(np.isfinite(v) for _, v in history)


def test_train_py_refuses_a_tokenizer_larger_than_the_vocabulary(tmp_path, corpus, run, capsys):
    big = _train(tmp_path, corpus, 400)
    assert T.vocab_size(big) > 300
    train = load_module(str(run / "code" / "flax" / "train.py"))
    with pytest.raises(SystemExit) as exc:
        train.DataSource(str(corpus), 0, big)
    assert "takes ids below 300" in str(exc.value.code)
    with pytest.raises(SystemExit) as exc:
        train.parse_args(["--tokenizer", big])
    assert exc.value.code == 2 and "--tokenizer reads a text --data file" in capsys.readouterr().err
    assert train.parse_args(["--data", str(corpus), "--tokenizer", big]).tokenizer == big


def test_export_and_import_carry_the_tokenizer(tmp_path, corpus, run, capsys):
    transformers = pytest.importorskip("transformers")
    tok = _train(tmp_path, corpus, 300, "--special-tokens", "<unk>,<s>,</s>")
    os.link(tok, run / "tokenizer.json")  # a run folder's tokenizer is exported with it
    try:
        assert main(["export", "hf", str(run), "-o", str(tmp_path / "hf")]) == 0
    finally:
        os.remove(run / "tokenizer.json")
    hf = tmp_path / "hf"
    assert (hf / "tokenizer.json").read_bytes() == open(tok, "rb").read()
    auto = transformers.AutoTokenizer.from_pretrained(str(hf))
    assert auto.bos_token == "<s>" and auto.eos_token_id == 2 and auto.unk_token == "<unk>"
    assert auto("the cat", add_special_tokens=False)["input_ids"] == T.encode(tok, "the cat")
    config = json.loads((hf / "config.json").read_text())
    gen = json.loads((hf / "generation_config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"]) == (1, 2) == (gen["bos_token_id"], gen["eos_token_id"])
    # and back: import copies it when asked, and says it is there when not
    assert main(["import", "hf", str(hf), "-o", str(tmp_path / "back.yaml")]) == 0
    assert "the model has a tokenizer; --tokenizer-out FILE copies it" in capsys.readouterr().err
    assert main(["import", "hf", str(hf), "-o", str(tmp_path / "back.yaml"), "--tokenizer-out", str(tmp_path / "t.json")]) == 0
    assert (tmp_path / "t.json").read_bytes() == open(tok, "rb").read()


def test_export_refuses_a_tokenizer_larger_than_the_vocabulary(tmp_path, corpus, run, capsys):
    big = _train(tmp_path, corpus, 400)
    assert main(["export", "hf", str(run), "--tokenizer", big, "-o", str(tmp_path / "hf")]) == 1
    err = capsys.readouterr().err
    assert f"{big}:1:1: error: the tokenizer tokenizer.json has {T.vocab_size(big)} tokens, more than the model's vocab_size 300" in err
    assert not (tmp_path / "hf").exists()


def test_import_without_a_tokenizer_is_an_error(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(vocab_size=97, n_positions=16, n_embd=32, n_layer=1, n_head=4)
    cfg.save_pretrained(tmp_path / "m")
    out = tmp_path / "m.yaml"
    assert main(["import", "hf", str(tmp_path / "m"), "-o", str(out), "--tokenizer-out", str(tmp_path / "t.json")]) == 1
    assert "no tokenizer here" in capsys.readouterr().err
    assert not out.exists()


def test_encode_decode_of_a_bad_file_is_located(tmp_path):
    from metagen.diagnostics import CompileError

    bad = tmp_path / "tokenizer.json"
    bad.write_text("{}")
    with pytest.raises(CompileError) as exc:
        T.encode(str(bad), "x")
    assert str(bad) in str(exc.value) and "not a tokenizer.json" in str(exc.value)


def test_generate_encodes_the_prompt_and_decodes_with_the_tokenizer(tmp_path, corpus, capsys):
    """`metagen generate --prompt TEXT --tokenizer F`: the prompt ids are the
    tokenizer's encoding (not bytes), and the text line is the tokenizer's decoding of
    every id printed."""
    tok = _train(tmp_path, corpus)
    spec = tmp_path / "lm.yaml"
    spec.write_text(LM, encoding="utf-8")
    prompt = "the cat sat"
    capsys.readouterr()  # what training printed
    assert main(["generate", str(spec), "--tokenizer", tok, "--prompt", prompt, "--max-new-tokens", "4"]) == 0
    ids_line, _, text = capsys.readouterr().out.partition("\n")  # the text may hold newlines
    ids = [int(t) for t in ids_line.split(",")]
    want = T.encode(tok, prompt)
    assert want != list(prompt.encode("utf-8"))  # merges make it differ from bytes
    assert ids[: len(want)] == want and len(ids) == len(want) + 4
    assert text == T.decode(tok, ids) + "\n" and text.startswith(prompt)


def test_generate_refuses_a_tokenizer_larger_than_the_vocabulary(tmp_path, corpus, capsys):
    tok = _train(tmp_path, corpus, 400)
    spec = tmp_path / "lm.yaml"
    spec.write_text(LM, encoding="utf-8")
    assert main(["generate", str(spec), "--tokenizer", tok, "--prompt", "the cat"]) == 1
    err = capsys.readouterr().err
    assert "more than the model's vocab_size 300" in err and "Traceback" not in err


@pytest.mark.slow  # import, export, pipeline load and two denoising steps: ~40 s on 2 loaded cores
def test_diffusion_export_with_a_tokenizer_loads_in_stable_diffusion_pipeline(tmp_path, corpus):
    """`export hf --tokenizer` of a text-to-image spec: StableDiffusionPipeline loads the
    folder with its tokenizer, which pads prompts to the context window (CLIP's
    convention: padded with the end-of-text token) and gives our ids; the pipeline
    runs end to end on them. (A --tiny text encoder has 256 ids, fewer than a byte-level
    tokenizer's 257 at least: the spec is a small imported pipeline with 300.)"""
    import re

    import torch

    diffusers = pytest.importorskip("diffusers")
    from test_hf_import import _sd_pipeline

    tok = _train(tmp_path, corpus)
    _sd_pipeline(tmp_path / "sd")
    spec = tmp_path / "sd.yaml"
    assert main(["import", "hf", str(tmp_path / "sd"), "-o", str(spec)]) == 0
    text = spec.read_text().replace("vocab_size: 100", "vocab_size: 300")
    spec.write_text(re.sub(r'    min: "\d+"\n', "", re.sub(r'max: "\d+"', 'max: "50M"', text)))
    assert main(["export", "hf", str(spec), "--tokenizer", tok, "-o", str(tmp_path / "hf")]) == 0
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(str(tmp_path / "hf"), safety_checker=None, vae=None)
    n = pipe.tokenizer.model_max_length
    assert n == pipe.text_encoder.config.max_position_embeddings
    ids = pipe.tokenizer("the cat naïve", padding="max_length", max_length=n, truncation=True).input_ids
    want = T.encode(tok, "the cat naïve")
    eos = T.special_tokens(tok)["eos_token"][1]
    assert ids == want + [eos] * (n - len(want))
    side = pipe.unet.config.sample_size * 8
    latents = pipe("the cat", num_inference_steps=2, height=side, width=side, output_type="latent",
                   generator=torch.Generator().manual_seed(0)).images
    assert latents.shape == (1, 4, pipe.unet.config.sample_size, pipe.unet.config.sample_size)
    assert torch.isfinite(latents).all()
