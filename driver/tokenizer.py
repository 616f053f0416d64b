"""Tokenizers: `metagen tokenizer train` (byte-level BPE with the `tokenizers` library),
and the one place that reads a `tokenizer.json` for the driver.

A trained tokenizer is a Hugging Face `tokenizer.json`: transformers'
`PreTrainedTokenizerFast`, the generated `train.py --tokenizer` and `metagen export hf`
read it as it is. Byte-level BPE covers every input (any byte is a token of the base
alphabet), so nothing maps to an unknown token. The special tokens come first (ids 0,
1, ...), then the 256 bytes, then the merges, up to the vocabulary size.

`encode(path, text)` and `decode(path, ids)` are what a command that takes text
(`metagen generate --prompt`) calls.
"""

from __future__ import annotations

import functools
import json
import os

from metagen.diagnostics import CompileError, Diagnostic, Loc

DEFAULT_SPECIAL_TOKENS = ("<|endoftext|>",)
MIN_VOCAB = 256  # the byte alphabet, before any special token or merge
# The roles transformers gives special tokens, by the spellings in use (GPT-2's one
# token plays all three; Llama's and Mistral's <s>, </s>, <unk>).
ROLES = {"bos_token": ("<s>", "<|endoftext|>", "<|begin_of_text|>"),
         "eos_token": ("</s>", "<|endoftext|>", "<|end_of_text|>"),
         "unk_token": ("<unk>",), "pad_token": ("<pad>",)}


def _fail(path: str, message: str) -> CompileError:
    return CompileError([Diagnostic("error", Loc(path, 1, 1), message)])


def train(files: list[str], vocab_size: int, special_tokens=DEFAULT_SPECIAL_TOKENS) -> str:
    """The `tokenizer.json` text of a byte-level BPE trained on `files` (UTF-8 text).
    The vocabulary holds at most `vocab_size` tokens (fewer when the data has fewer
    distinct merges). Deterministic: the same files give the same bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    special = list(dict.fromkeys(special_tokens))
    if vocab_size < MIN_VOCAB + len(special):
        raise ValueError(f"--vocab-size {vocab_size} is below the byte alphabet and the special tokens "
                         f"({MIN_VOCAB} + {len(special)}); the smallest is {MIN_VOCAB + len(special)}")
    for f in files:
        try:
            with open(f, "rb") as fh:
                fh.read().decode("utf-8")
        except OSError as exc:
            raise _fail(f, f"cannot read the training text: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise _fail(f, f"not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train(files, trainer)
    # The compact JSON tokenizers writes, re-dumped with sorted keys: one spelling.
    return json.dumps(json.loads(tok.to_str()), ensure_ascii=False, indent=2, sort_keys=True) + "\n"


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime: float):
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(path)
    except Exception as exc:  # tokenizers raises a bare Exception for a bad file
        raise _fail(path, f"not a tokenizer.json: {exc}") from None


def load(path: str):
    """The `tokenizers.Tokenizer` in `path`; a located error if it is none."""
    try:
        mtime = os.stat(path).st_mtime
    except OSError as exc:
        raise _fail(path, f"cannot read the tokenizer: {exc.strerror or exc}") from None
    return _load(os.path.abspath(path), mtime)


def vocab_size(path: str) -> int:
    """Every id the tokenizer can produce is below this (special tokens included)."""
    return load(path).get_vocab_size(with_added_tokens=True)


def encode(path: str, text: str) -> list[int]:
    """`text` as token ids, special tokens not added."""
    return list(load(path).encode(text, add_special_tokens=False).ids)


def decode(path: str, ids) -> str:
    """Token ids back to text (special tokens kept, so an end-of-text shows)."""
    return load(path).decode([int(i) for i in ids], skip_special_tokens=False)


def special_tokens(path: str) -> dict[str, tuple[str, int]]:
    """transformers' role -> (token, id) for the special tokens the tokenizer has."""
    tok = load(path)
    out = {}
    for role, spellings in ROLES.items():
        for s in spellings:
            i = tok.token_to_id(s)
            if i is not None:
                out[role] = (s, i)
                break
    return out


def model_vocab(model) -> int | None:
    """The ids a compiled model's token inputs take (below this); None without any."""
    highs = [int(i.high) for i in model.inputs if i.kind == "tokens"]
    return min(highs) if highs else None


def find(folder: str) -> str | None:
    """The Hugging Face tokenizer in a model folder (`tokenizer.json`) or a diffusers
    pipeline folder (`tokenizer/tokenizer.json`), if it has one."""
    for rel in ("tokenizer.json", os.path.join("tokenizer", "tokenizer.json")):
        path = os.path.join(folder, rel)
        if os.path.isfile(path):
            return path
    return None


def check_fits(path: str, model_vocab: int, where: Loc) -> None:
    """A tokenizer whose ids reach past the model's vocabulary is an error at `where`."""
    n = vocab_size(path)
    if n > model_vocab:
        raise CompileError([Diagnostic("error", where, (
            f"the tokenizer {os.path.basename(path)} has {n} tokens, more than the model's vocab_size "
            f"{model_vocab}; train it with --vocab-size {model_vocab} or raise architecture.vocab_size to {n}"))])
