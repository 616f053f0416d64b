"""Inference features of the generated models: padding masks, the KV cache (decode
form), generate() and its ONNX loop, sliding-window attention, against the
models' own unpadded / uncached runs and against transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import compile_to, example, load_module
from metagen.hf import bert_to_canonical, gpt2_to_canonical, llama_to_canonical

GPT2 = ("reference", "gpt2_small.yaml")
LLAMA = ("reference", "llama2_7b.yaml")
BERT = ("reference", "bert_base_classifier.yaml")
CLIP = ("tutorial", "step7_clip.yaml")
AUDIO = ("tutorial", "pattern_audio.yaml")
GQA = (("architecture.kv_heads", "2"),)  # tiny Llama: 4 heads sharing 2 key/value heads


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """(spec parts, target, overrides) -> the generated module, compiled once."""
    cache = {}

    def _build(parts, target="torch", overrides=()):
        key = (parts, target, overrides)
        if key not in cache:
            tmp = tmp_path_factory.mktemp("inference")
            path, _ = compile_to(tmp, example(*parts), target, overrides=list(overrides))
            cache[key] = path if target == "onnx" else load_module(str(path))
        return cache[key]

    return _build


def close(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert np.all(np.abs(a - b) <= 1e-5 + 1e-4 * np.abs(b)), float(np.max(np.abs(a - b)))


def perturbed(mod, seed=1):
    """Canonical weights with every entry moved (zero biases and unit norms hide bugs)."""
    rng = np.random.default_rng(seed)
    w = mod.to_canonical(mod.init(0))
    return {k: (v + rng.standard_normal(v.shape).astype(np.float32) * 0.05).astype(np.float32) for k, v in w.items()}


def left_padded(rng, lengths, vocab, pad=0):
    """A left-padded batch of token rows of the given lengths, and its mask."""
    n = max(lengths)
    ids = np.full((len(lengths), n), pad, np.int64)
    mask = np.zeros((len(lengths), n), np.int64)
    for r, k in enumerate(lengths):
        ids[r, n - k :] = rng.integers(1, vocab, k)
        mask[r, n - k :] = 1
    return ids, mask


def right_padded(rng, lengths, vocab, pad=0):
    ids, mask = left_padded(rng, lengths, vocab, pad)
    for r, k in enumerate(lengths):
        ids[r] = np.roll(ids[r], k - ids.shape[1])
        mask[r] = np.roll(mask[r], k - ids.shape[1])
    return ids, mask


# ------------------------------------------------------------------ padding masks


@pytest.mark.parametrize("parts,overrides", [(GPT2, ()), (LLAMA, GQA)], ids=["gpt2", "llama_gqa"])
def test_left_padded_decoder_matches_rows_alone(build, parts, overrides):
    mod = build(parts, overrides=overrides)
    state = mod.load_canonical(perturbed(mod))
    ids, mask = left_padded(np.random.default_rng(0), [7, 4, 1], mod.CONFIG["vocab_size"])
    padded = mod.run(state, {"input_ids": ids, "attention_mask": mask})["logits"]
    for r in range(len(ids)):
        real = mask[r] == 1
        alone = mod.run(state, {"input_ids": ids[r : r + 1, real]})["logits"][0]
        close(padded[r, real], alone)


def test_right_padded_encoder_matches_rows_alone(build):
    mod = build(BERT)
    state = mod.load_canonical(perturbed(mod))
    ids, mask = right_padded(np.random.default_rng(0), [9, 3], mod.CONFIG["vocab_size"])
    types = np.zeros_like(ids)
    padded = mod.run(state, {"input_ids": ids, "token_type_ids": types, "attention_mask": mask})["logits"]
    for r in range(len(ids)):
        real = mask[r] == 1
        alone = mod.run(state, {"input_ids": ids[r : r + 1, real], "token_type_ids": types[r : r + 1, real]})["logits"]
        close(padded[r], alone[0])
    # the mask matters: without it, the short row reads its padding
    unmasked = mod.run(state, {"input_ids": ids, "token_type_ids": types})["logits"]
    assert np.max(np.abs(unmasked[1] - padded[1])) > 1e-3


def test_right_padded_clip_text_matches_rows_alone(build):
    mod = build(CLIP)
    state = mod.load_canonical(perturbed(mod))
    vocab = mod.INPUTS and mod._INPUT_KINDS[0]["high"]
    ids, mask = right_padded(np.random.default_rng(0), [8, 3], int(vocab) - 1)
    for r, k in enumerate([8, 3]):
        ids[r, k - 1] = int(vocab) - 1  # end-of-text: the highest id, where CLIP pools
    pixels = mod.example_inputs(batch_size=2)["pixel_values"]
    padded = mod.run(state, {"input_ids": ids, "pixel_values": pixels, "attention_mask": mask})["text_embeds"]
    for r in range(2):
        real = mask[r] == 1
        alone = mod.run(state, {"input_ids": ids[r : r + 1, real], "pixel_values": pixels[r : r + 1]})["text_embeds"]
        close(padded[r], alone[0])


def test_padded_batch_agrees_in_every_backend(build):
    """The same left-padded batch through numpy (the reference), torch, flax and
    onnxruntime: every output, logits and present keys and values alike."""
    import onnxruntime as ort

    ref = build(GPT2, "numpy")
    weights = perturbed(ref)
    ids, mask = left_padded(np.random.default_rng(1), [6, 2], ref.CONFIG["vocab_size"])
    feed = {"input_ids": ids, "attention_mask": mask}
    want = ref.run(ref.load_canonical(weights), feed)
    for target in ("torch", "flax"):
        mod = build(GPT2, target)
        got = mod.run(mod.load_canonical(weights), feed)
        assert sorted(got) == sorted(want)
        for name in want:
            close(got[name], want[name])
    from metagen.generate import complete_inputs
    from metagen.pipeline import compile_spec
    from metagen.backends.onnx_backend import lower_to_onnx

    model = compile_spec(example(*GPT2), tiny=True).model
    sess = ort.InferenceSession(lower_to_onnx(model, weights)[""], providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, complete_inputs(model, feed))))
    for name in want:
        close(got[name], want[name])


def _hf_gpt2(c):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(
        GPT2Config(vocab_size=c["vocab_size"], n_positions=c["context_window"], n_embd=c["hidden_size"],
                   n_layer=c["layers"], n_head=c["heads"], n_inner=c["ffn_size"], activation_function="gelu_new",
                   resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    ).eval()


def _hf_llama(c, cls=None, **extra):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = dict(vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], intermediate_size=c["ffn_size"],
                  num_hidden_layers=c["layers"], num_attention_heads=c["heads"], num_key_value_heads=c["kv_heads"],
                  head_dim=c["head_dim"], rms_norm_eps=c["norm_eps"], rope_theta=c["rope_theta"],
                  max_position_embeddings=c["context_window"], tie_word_embeddings=False)
    if cls is None:
        return LlamaForCausalLM(LlamaConfig(**config)).eval()
    return cls[0](cls[1](**config, **extra)).eval()


@pytest.mark.parametrize("parts,overrides", [(GPT2, ()), (LLAMA, GQA)], ids=["gpt2", "llama_gqa"])
def test_left_padded_decoder_matches_transformers(build, parts, overrides):
    mod = build(parts, overrides=overrides)
    c = mod.CONFIG
    hf, to_canonical = (_hf_gpt2(c), gpt2_to_canonical) if parts == GPT2 else (_hf_llama(c), llama_to_canonical)
    state = mod.load_canonical(to_canonical(hf.state_dict()))
    ids, mask = left_padded(np.random.default_rng(2), [9, 5], c["vocab_size"])
    ours = mod.run(state, {"input_ids": ids, "attention_mask": mask})["logits"]
    positions = np.where(mask == 0, 0, np.cumsum(mask, -1) - 1)  # as generate() derives them
    with torch.no_grad():
        ref = hf(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                 position_ids=torch.from_numpy(positions)).logits.numpy()
    real = mask == 1
    close(ours[real], ref[real])


def test_right_padded_bert_matches_transformers(build):
    import transformers

    mod = build(BERT)
    c = mod.CONFIG
    torch.manual_seed(0)
    hf = transformers.BertForSequenceClassification(
        transformers.BertConfig(
            vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], num_hidden_layers=c["layers"],
            num_attention_heads=c["heads"], intermediate_size=c["ffn_size"],
            max_position_embeddings=c["context_window"], type_vocab_size=c["type_vocab_size"],
            num_labels=c["num_classes"], layer_norm_eps=c["norm_eps"], hidden_act="gelu",
        )
    ).eval()
    state = mod.load_canonical(bert_to_canonical(hf.state_dict()))
    ids, mask = right_padded(np.random.default_rng(3), [10, 4, 7], c["vocab_size"])
    types = (np.arange(ids.shape[1]) >= 2).astype(np.int64)[None].repeat(3, 0) * mask
    feed = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
    with torch.no_grad():
        ref = hf(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()
    close(mod.run(state, feed)["logits"], ref)


# ------------------------------------------------------------------ KV cache


def _decode_in_pieces(mod, state, ids, cuts):
    """Logits of `ids` fed in pieces split at `cuts`, the cache carried between them."""
    cache, logits, mask = {}, [], None
    names = [(p["name"], q) for p, q in zip([k for k in mod._INPUT_KINDS if k["kind"] == "cache"], mod.OUTPUTS[1:])]
    bounds = [0, *cuts, ids.shape[-1]]
    for a, b in zip(bounds, bounds[1:]):
        out = mod.run(state, {mod._INPUT_KINDS[0]["name"]: ids[..., a:b], **cache})
        logits.append(out["logits"])
        cache = {past: out[present] for past, present in names}
    return np.concatenate(logits, axis=-2)


@pytest.mark.parametrize(
    "parts,overrides",
    [(GPT2, ()), (LLAMA, GQA), (AUDIO, ()), (LLAMA, (("architecture.sliding_window", "3"),))],
    ids=["gpt2", "llama_gqa", "audio", "sliding_window"],
)
def test_cache_gives_the_full_forward(build, parts, overrides):
    """Full forward == prefill + one-token steps == any split of the prompt."""
    mod = build(parts, overrides=overrides)
    state = mod.load_canonical(perturbed(mod))
    x = mod.example_inputs(batch_size=2, seed=4)
    tokens = x[mod._INPUT_KINDS[0]["name"]][..., :10]
    full = mod.run(state, {mod._INPUT_KINDS[0]["name"]: tokens})["logits"]
    for cuts in ([4, 5, 6, 7, 8, 9], [3, 8], [1]):
        close(_decode_in_pieces(mod, state, tokens, cuts), full)


@pytest.mark.parametrize("parts,overrides", [(GPT2, ()), (LLAMA, GQA)], ids=["gpt2_tied_head", "llama_lm_head"])
def test_logits_to_keep_gives_the_last_positions(build, parts, overrides):
    """forward(logits_to_keep=n) returns the full forward's last n positions' logits
    (generate() asks for one at every step); 0, the default, keeps them all."""
    mod = build(parts, overrides=overrides)
    state = mod.load_canonical(perturbed(mod))
    ids = torch.from_numpy(mod.example_inputs(batch_size=2, seed=4)["input_ids"][:, :10])
    with torch.no_grad():
        full = state(input_ids=ids)["logits"]
        for n in (1, 3):
            part = state(input_ids=ids, logits_to_keep=n)["logits"]
            assert part.shape == (2, n, full.shape[-1])
            close(part.numpy(), full[:, -n:].numpy())
        close(state(input_ids=ids, logits_to_keep=0)["logits"].numpy(), full.numpy())


@pytest.mark.parametrize("parts,overrides", [(GPT2, ()), (LLAMA, GQA), (AUDIO, ())], ids=["gpt2", "llama_gqa", "audio"])
def test_use_cache_false_keeps_no_cache(build, parts, overrides):
    """forward(use_cache=False) returns the same logits and None for every present.*
    output (as transformers' models do), so no layer's keys and values outlive it."""
    mod = build(parts, overrides=overrides)
    state = mod.load_canonical(perturbed(mod))
    name = mod._INPUT_KINDS[0]["name"]
    tokens = torch.from_numpy(mod.example_inputs(batch_size=2, seed=4)[name][..., :10])
    with torch.no_grad():
        full = state(**{name: tokens})
        bare = state(**{name: tokens}, use_cache=False)
    assert list(bare) == list(full)
    close(bare["logits"].numpy(), full["logits"].numpy())
    presents = [k for k in full if k.startswith("present.")]
    assert presents and all(bare[k] is None for k in presents)
    assert all(full[k] is not None for k in presents)


@pytest.mark.slow
def test_cache_in_numpy_and_flax_too(build):
    for target in ("numpy", "flax"):
        mod = build(LLAMA, target, GQA)
        state = mod.load_canonical(perturbed(mod))
        tokens = mod.example_inputs(batch_size=2, seed=5)["input_ids"][:, :8]
        close(_decode_in_pieces(mod, state, tokens, [5, 6, 7]), mod.run(state, {"input_ids": tokens})["logits"])


def test_sliding_window_matches_mistral(build):
    from transformers import MistralConfig, MistralForCausalLM

    mod = build(LLAMA, overrides=(*GQA, ("architecture.sliding_window", "3")))
    assert mod.CONFIG["sliding_window"] == 3
    hf = _hf_llama(mod.CONFIG, (MistralForCausalLM, MistralConfig), sliding_window=3)
    state = mod.load_canonical(llama_to_canonical(hf.state_dict()))
    ids = mod.example_inputs(batch_size=2, seed=6)["input_ids"][:, :12]
    with torch.no_grad():
        ref = hf(input_ids=torch.from_numpy(ids)).logits.numpy()
    ours = mod.run(state, {"input_ids": ids})["logits"]
    close(ours, ref)
    full_attention = build(LLAMA, overrides=GQA)
    other = full_attention.run(full_attention.load_canonical(llama_to_canonical(hf.state_dict())), {"input_ids": ids})
    assert np.max(np.abs(other["logits"][:, 5:] - ours[:, 5:])) > 1e-3  # the window changed something


# ------------------------------------------------------------------ generate


@pytest.mark.parametrize("parts,overrides", [(GPT2, ()), (LLAMA, GQA)], ids=["gpt2", "llama_gqa"])
def test_greedy_generate_matches_transformers(build, parts, overrides):
    mod = build(parts, overrides=overrides)
    c = mod.CONFIG
    hf, to_canonical = (_hf_gpt2(c), gpt2_to_canonical) if parts == GPT2 else (_hf_llama(c), llama_to_canonical)
    with torch.no_grad():  # larger weights than the init's, so greedy does not just repeat one token
        for p in hf.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.15)
    state = mod.load_canonical(to_canonical(hf.state_dict()))
    ids, mask = left_padded(np.random.default_rng(7), [6, 3], c["vocab_size"])
    ours = mod.generate(state, ids, attention_mask=mask, max_new_tokens=12)
    with torch.no_grad():
        ref = hf.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), max_new_tokens=12,
                          do_sample=False, pad_token_id=0).numpy()
    assert ours.dtype == np.int64 and ours.shape == (2, 6 + 12)
    np.testing.assert_array_equal(ours, ref)
    assert len(set(ours[0, 6:].tolist())) > 1  # not a degenerate repetition


def test_numpy_generates_the_torch_tokens(build):
    """The fast suite's cross-backend check (the slow one adds flax and onnxruntime)."""
    weights = perturbed(build(GPT2, "torch"))
    ids, mask = left_padded(np.random.default_rng(9), [4, 2], 256)
    for options in (dict(), dict(do_sample=True, temperature=0.8, top_k=30, top_p=0.95, seed=5)):
        runs = [m.generate(m.load_canonical(weights), ids, attention_mask=mask, max_new_tokens=6, **options)
                for m in (build(GPT2, "torch"), build(GPT2, "numpy"))]
        np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.slow
def test_every_backend_generates_the_same_tokens(build):
    import onnxruntime as ort

    from metagen.backends.onnx_backend import lower_to_onnx
    from metagen.generate import onnx_generate
    from metagen.pipeline import compile_spec

    ref = build(LLAMA, "torch", GQA)
    weights = perturbed(ref, seed=2)
    ids, mask = left_padded(np.random.default_rng(8), [5, 3], ref.CONFIG["vocab_size"])
    runs = {}
    for options in (dict(), dict(do_sample=True, temperature=0.7, top_k=40, top_p=0.9, seed=11)):
        key = "sampled" if options else "greedy"
        for target in ("torch", "flax", "numpy"):
            mod = build(LLAMA, target, GQA)
            runs[key, target] = mod.generate(mod.load_canonical(weights), ids, attention_mask=mask, max_new_tokens=8, **options)
        model = compile_spec(example(*LLAMA), tiny=True, overrides=list(GQA)).model
        sess = ort.InferenceSession(lower_to_onnx(model, weights)[""], providers=["CPUExecutionProvider"])
        runs[key, "onnx"] = onnx_generate(sess, model, ids, attention_mask=mask, max_new_tokens=8, **options)
        for target in ("flax", "numpy", "onnx"):
            np.testing.assert_array_equal(runs[key, target], runs[key, "torch"])
    assert not np.array_equal(runs["sampled", "torch"], runs["greedy", "torch"])


def test_generate_stops_at_eos_and_pads_after(build):
    mod = build(GPT2)
    state = mod.load_canonical(perturbed(mod))
    ids = mod.example_inputs(batch_size=2, seed=9)["input_ids"][:, :4]
    free = mod.generate(state, ids, max_new_tokens=6)
    eos = int(free[0, 5])  # row 0's second new token
    out = mod.generate(state, ids, max_new_tokens=6, eos_token_id=eos, pad_token_id=3)
    first = list(free[0, 4:]).index(eos) + 4
    np.testing.assert_array_equal(out[0, : first + 1], free[0, : first + 1])
    assert (out[0, first + 1 :] == 3).all()
    row1 = list(free[1, 4:])
    if eos in row1:  # row 1 stopped too: generation ends when every row has
        assert out.shape[1] <= 4 + max(first - 4, row1.index(eos)) + 1
    else:
        assert out.shape[1] == 4 + 6
        np.testing.assert_array_equal(out[1], free[1])


def test_audio_generates_every_codebook(build):
    mod = build(AUDIO)
    state = mod.load_canonical(perturbed(mod))
    codes = mod.example_inputs(batch_size=1, seed=3)["codes"][..., :5]
    out = mod.generate(state, codes, max_new_tokens=4)
    assert out.shape == codes.shape[:-1] + (9,)
    np.testing.assert_array_equal(out[..., :5], codes)
    nxt = mod.run(state, {"codes": codes})["logits"][..., -1, :].argmax(-1)
    np.testing.assert_array_equal(out[..., 5], nxt)


def test_synth_onnx_folder_decodes_like_torch(build):
    """The run folder's ONNX graph and genai_config.json, as onnxruntime-genai reads
    them: a greedy loop driven only by the config's names gives torch's tokens."""
    import json

    import onnxruntime as ort

    from metagen.pipeline import compile_spec
    from metagen.synth import synth_files

    comp = compile_spec(example(*LLAMA), tiny=True, overrides=list(GQA))
    files = synth_files(comp, seed=0)
    config = json.loads(files["onnx/genai_config.json"])
    m, dec = config["model"], config["model"]["decoder"]
    assert m["type"] == "decoder" and dec["filename"] == "model.onnx"
    c = comp.model.config
    assert (dec["num_hidden_layers"], dec["num_attention_heads"], dec["num_key_value_heads"], dec["head_size"]) == (
        c["layers"], c["heads"], c["kv_heads"], c["head_dim"])
    assert m["context_length"] == c["context_window"] and m["vocab_size"] == c["vocab_size"]
    sess = ort.InferenceSession(files["onnx/model.onnx"], providers=["CPUExecutionProvider"])
    names, outs = dec["inputs"], dec["outputs"]
    assert {i.name for i in sess.get_inputs()} == {names["input_ids"], names["attention_mask"], names["position_ids"]} | {
        names[k] % i for k in ("past_key_names", "past_value_names") for i in range(c["layers"])}
    ids = np.random.default_rng(10).integers(0, c["vocab_size"], (1, 5))
    tokens, mask = ids, np.ones_like(ids)
    past = {names[k] % i: np.zeros((1, c["kv_heads"], 0, c["head_dim"]), np.float32)
            for k in ("past_key_names", "past_value_names") for i in range(c["layers"])}
    new = []
    for _ in range(6):
        positions = np.arange(mask.shape[1] - tokens.shape[1], mask.shape[1])[None]
        feed = {names["input_ids"]: tokens, names["attention_mask"]: mask, names["position_ids"]: positions, **past}
        got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
        tokens = got[outs["logits"]][:, -1].argmax(-1)[:, None].astype(np.int64)
        new.append(int(tokens[0, 0]))
        mask = np.concatenate([mask, np.ones((1, 1), np.int64)], axis=1)
        past = {names[k] % i: got[outs[k.replace("past", "present")] % i]
                for k in ("past_key_names", "past_value_names") for i in range(c["layers"])}
    mod = build(LLAMA, "torch", GQA)
    np.testing.assert_array_equal(mod.generate(mod.init(0), ids, max_new_tokens=6)[0, 5:], new)


# ------------------------------------------------------------------ embed and zero_shot


def test_encoder_embed_is_normalized_and_padding_free(build):
    mod = build(BERT)
    state = mod.load_canonical(perturbed(mod))
    ids, mask = right_padded(np.random.default_rng(11), [8, 3], mod.CONFIG["vocab_size"])
    types = np.zeros_like(ids)
    emb = mod.embed(state, {"input_ids": ids, "token_type_ids": types, "attention_mask": mask})
    assert list(emb) == ["embeds"] and emb["embeds"].shape == (2, mod.CONFIG["hidden_size"])
    close(np.linalg.norm(emb["embeds"], axis=-1), np.ones(2))
    alone = mod.embed(state, {"input_ids": ids[1:, :3], "token_type_ids": types[1:, :3]})["embeds"]
    close(emb["embeds"][1], alone[0])


def test_clip_embed_and_zero_shot(build):
    mod = build(CLIP)
    state = mod.load_canonical(perturbed(mod))
    x = mod.example_inputs(batch_size=3, seed=12)
    both = mod.run(state, x)
    text = mod.embed(state, {"input_ids": x["input_ids"]})
    assert list(text) == ["text_embeds"]
    close(text["text_embeds"], both["text_embeds"])
    close(mod.embed(state, {"pixel_values": x["pixel_values"]})["image_embeds"], both["image_embeds"])
    images = mod.example_inputs(batch_size=2, seed=13)["pixel_values"]  # 2 images, 3 classes
    probs = mod.zero_shot(state, images, x["input_ids"])
    assert probs.shape == (2, 3)
    close(probs.sum(-1), np.ones(2))
    img = mod.embed(state, {"pixel_values": images})["image_embeds"]
    scale = float(np.exp(mod.to_canonical(state)["logit_scale"][0]))
    logits = scale * img.astype(np.float64) @ text["text_embeds"].T.astype(np.float64)
    want = np.exp(logits - logits.max(-1, keepdims=True))
    close(probs, want / want.sum(-1, keepdims=True))


# ------------------------------------------------------------------ metagen generate


def test_generate_cli_prints_the_module_tokens(build):
    """`metagen generate` (onnx backend) prints what the torch module's generate gives,
    prompt first, then the bytes as text."""
    import contextlib
    import io

    from metagen.cli import main

    mod = build(GPT2)
    want = mod.generate(mod.init(0), np.array([list(b"Hi")]), max_new_tokens=5)[0]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["generate", example(*GPT2), "--tiny", "--backend", "onnx", "--prompt", "Hi", "--max-new-tokens", "5"])
    assert code == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == ",".join(map(str, want))
    assert lines[1].startswith("Hi")


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["--tiny", "--prompt-ids", "1,2,999"], 2, "out of the vocabulary"),
        (["--tiny"], 2, "give a prompt"),
        (["--tiny", "--prompt-ids", "1", "--top-p", "0"], 2, "--top-p must be in (0, 1]"),
        (["--tiny", "--prompt-ids", "1", "--temperature", "-1"], 2, "--temperature must be > 0"),
        (["--tiny", "--prompt-ids", "1", "--max-new-tokens", "64"], 2, "exceeds the context window"),
    ],
)
def test_generate_cli_refuses_bad_arguments(args, code, message, capsys):
    from metagen.cli import main

    try:
        got = main(["generate", example(*GPT2), *args])
    except SystemExit as exc:  # argparse's own refusals
        got = exc.code
    assert got == code
    assert message in capsys.readouterr().err


def test_generate_cli_names_the_families_that_generate(capsys):
    from metagen.cli import main

    assert main(["generate", example(*BERT), "--tiny", "--prompt-ids", "1,2"]) == 1
    err = capsys.readouterr().err
    assert "encoder family has no decode form" in err and "decoder_lm, audio_lm" in err
    assert "Traceback" not in err
