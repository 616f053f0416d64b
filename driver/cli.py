"""`metagen` and `metagenc`: the user-facing driver and the compiler proper.

Exit codes: 0 success (warnings allowed), 1 the spec or the build failed, 2 misuse
of the command line (argparse's own code).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from metagen import __version__
from metagen.backends import registry
from metagen.diagnostics import CompileError, DiagnosticSink

TARGETS = registry.names()


def _define(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"-D needs key=value, got {text!r}")
    k, _, v = text.partition("=")
    if not k.strip():
        raise argparse.ArgumentTypeError(f"-D needs key=value, got {text!r}")
    return k.strip(), v


class _Precision(argparse.Action):
    """`--precision P` is `-D constraints.precision=P`: one concept, the spec's
    deployment precision (memory, latency, and what the emitters quantize to)."""

    def __call__(self, parser, namespace, value, option_string=None):
        defines = list(getattr(namespace, "define", None) or [])
        defines.append(("constraints.precision", value))
        namespace.define = defines


def _precision_option(p) -> None:
    from metagen.frontend.schema import PRECISIONS

    p.add_argument("--precision", action=_Precision, choices=PRECISIONS, help=HELP["precision"])


def _size(text: str) -> int:
    from metagen.hf_export import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seed(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seed needs a non-negative integer, got {text!r}") from None
    if not 0 <= n < 2**63:
        raise argparse.ArgumentTypeError("--seed must be in [0, 2^63)")
    return n


def write_stdout(data: bytes) -> None:
    """Generated text goes to stdout as UTF-8 bytes, whatever the terminal's encoding."""
    sys.stdout.flush()
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:  # a text-only stream (tests redirect stdout to StringIO)
        sys.stdout.write(data.decode("utf-8"))
    else:
        buffer.write(data)
        buffer.flush()


# Help text of the options several commands share: one place each.
HELP = {
    "spec": "the spec: .yaml/.yml/.json (the YAML spec language) or .mg (the DSL)",
    "tiny": "keep the topology, shrink every size to test scale (a 70B spec runs on a laptop)",
    "define": "override one spec field as if written in the spec (-D architecture.layers=2); repeatable",
    "seed": "seed of the initial weights (default: the spec's reproducibility.seed, else 0)",
    "werror": "treat warnings as errors (exit 1, write nothing)",
    "precision": (
        "deployment precision of the weights: sets constraints.precision (same as -D constraints.precision=P; "
        "default: the spec's, else the device's: int8 on edge and mobile, bf16 elsewhere)"
    ),
}


def _finish(sink: DiagnosticSink, werror: bool = False) -> int:
    """Print diagnostics; the exit code they imply."""
    if werror and sink.warnings:
        sink.items = [d if d.severity != "warning" else type(d)("error", d.loc, d.message + " [-Werror]") for d in sink.items]
    sink.render_all()
    return 1 if sink.errors else 0


def _compile(args, sink: DiagnosticSink, instruments=()):
    from metagen.pipeline import compile_spec

    return compile_spec(args.spec, sink, overrides=args.define or [], tiny=args.tiny, instruments=instruments)


def _effective_seed(args, comp) -> int:
    if args.seed is not None:
        return args.seed
    return comp.spec.reproducibility.seed or 0


def _load_weights(path: str) -> dict:
    """The tensors of a safetensors file; anything else (missing, a folder, a device,
    not safetensors, a dtype numpy lacks) is a diagnostic at the path."""
    import stat

    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from metagen.diagnostics import Diagnostic, Loc

    def refuse(why: str):
        return CompileError([Diagnostic("error", Loc(path, 1, 1), f"cannot read weights: {why}")])

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # load_file would block on a FIFO
            raise refuse("not a regular file")
        return load_file(path)
    except OSError as exc:
        raise refuse(exc.strerror or str(exc)) from None
    except (SafetensorError, ValueError, TypeError) as exc:
        raise refuse(f"not a safetensors file ({exc})") from None


# ------------------------------------------------------------------ metagenc


def metagenc_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="metagenc",
        description="Compile a MetaGen spec to one target.",
        usage="%(prog)s SPEC --target TARGET [options]\n       %(prog)s --list-passes [--tiny]",
    )
    p.add_argument("spec", nargs="?", help=HELP["spec"])
    p.add_argument("--target", choices=TARGETS, help="the backend to emit: " + ", ".join(TARGETS))
    p.add_argument(
        "-o",
        dest="output",
        help="output file ('-' for stdout, text targets only); default: the spec's stem plus the target's suffix",
    )
    p.add_argument("--seed", type=_seed, help=HELP["seed"])
    p.add_argument("-D", dest="define", action="append", type=_define, metavar="KEY=VALUE", help=HELP["define"])
    _precision_option(p)
    p.add_argument("--tiny", action="store_true", help=HELP["tiny"])
    p.add_argument("--weights", help="safetensors file of canonical weights to embed (onnx)")
    p.add_argument("-MD", dest="md", action="store_true", help="write a make depfile beside the output")
    p.add_argument("-MF", dest="mf", help="depfile path")
    p.add_argument("-Werror", dest="werror", action="store_true", help=HELP["werror"])
    p.add_argument("--list-passes", action="store_true", help="print the pass pipeline for these flags and exit")
    p.add_argument("--print-after-all", action="store_true", help="print the IR to stderr after every pass")
    p.add_argument("--print-after", action="append", metavar="PASS", help="print the IR to stderr after PASS")
    p.add_argument("--version", action="version", version=f"metagenc {__version__}")
    args = p.parse_args(argv)
    from metagen.pipeline import PrintIR, pipeline

    passes = pipeline(args.tiny)
    if args.list_passes:
        width = max(len(q.spelling()) for q in passes)
        for q in passes:
            print(f"{q.spelling():<{width}}  {q.summary()}")
        return 0
    missing = [what for what, v in (("spec", args.spec), ("--target", args.target)) if v is None]
    if missing:
        p.error(f"the following arguments are required: {', '.join(missing)}")
    names = [q.name for q in passes]
    for name in args.print_after or ():
        if name not in names:
            p.error(f"--print-after: no pass '{name}' in this pipeline; passes: {', '.join(names)}")
    instruments = []
    if args.print_after_all or args.print_after:
        instruments.append(PrintIR(None if args.print_after_all else frozenset(args.print_after)))
    if args.output == "":
        p.error("-o needs a file name ('-' for stdout)")
    backend = registry.get(args.target)
    if args.output == "-" and backend.binary:
        p.error(f"-o - (stdout) is for text targets; {backend.name} is binary")
    if args.weights and not backend.takes_weights:
        p.error(f"--weights applies to --target {'|'.join(b.name for b in registry.BACKENDS.values() if b.takes_weights)}")
    sink = DiagnosticSink()
    try:
        comp = _compile(args, sink, instruments)
        if args.werror and sink.warnings:
            return _finish(sink, True)
        weights = _load_weights(args.weights) if args.weights else None
        out = args.output or (os.path.splitext(os.path.basename(args.spec))[0] + backend.suffix)
        from metagen.artifacts import emit_target

        data_name = os.path.basename(out) + ".data"
        files = emit_target(comp, args.target, _effective_seed(args, comp), weights=weights, data_name=data_name, stream=True)
        if args.werror and sink.warnings:
            return _finish(sink, True)  # before writing: a failed build leaves no output
    except CompileError as exc:
        sink.absorb(exc.diagnostics)
        return _finish(sink, args.werror) or 1
    except OSError as exc:
        print(f"metagenc: error: {exc}", file=sys.stderr)
        return 1
    from metagen.outputs import depfile_text, write_files

    writes = {}
    if out != "-":
        for rel, data in files.items():
            writes[out if rel == "" else os.path.join(os.path.dirname(out), rel)] = data
    try:
        if args.md or args.mf:
            # OUT.d, not the stem: x.py and x.onnx from one spec must not share a depfile
            depfile = args.mf or (out + ".d" if out != "-" else "metagenc.d")
            # surrogateescape: a name the locale could not decode is written back as its bytes
            writes[depfile] = depfile_text(out, comp.deps, depfile).encode("utf-8", "surrogateescape")
        write_files(writes)
    except CompileError as exc:
        sink.extend(exc.diagnostics)
        return _finish(sink) or 1
    if out == "-":
        write_stdout(files[""])
    return _finish(sink, args.werror)


# ------------------------------------------------------------------ metagen


def _cmd_validate(args) -> int:
    sink = DiagnosticSink()
    try:
        comp = _compile(args, sink)
    except CompileError as exc:
        sink.absorb(exc.diagnostics)
        return _finish(sink) or 1
    code = _finish(sink, args.werror)
    if code == 0:
        r = comp.ctx.report
        from metagen.diagnostics import printable
        from metagen.frontend.units import format_count

        print(
            f"OK {printable(comp.spec.name)} ({comp.ctx.family}, {format_count(r['total_params'])} parameters, "
            f"binding: {r.get('binding_constraint')})"
        )
        from metagen.explain import design_of, summary_lines

        print("\n".join(summary_lines(design_of(comp, args.spec))))
    return code


def _cmd_schema(args) -> int:
    from metagen.frontend.schema import to_json_schema

    print(json.dumps(to_json_schema(), indent=2, ensure_ascii=False))
    return 0


def _cmd_synth(args) -> int:
    from metagen.synth import synthesize

    sink = DiagnosticSink()
    try:
        comp = _compile(args, sink)
        if args.werror and sink.warnings:
            return _finish(sink, True)
        path = synthesize(comp, args.out, _effective_seed(args, comp), args.run_id)
    except CompileError as exc:
        sink.absorb(exc.diagnostics)
        return _finish(sink) or 1
    code = _finish(sink)
    print(f"wrote {path}")
    from metagen.explain import design_of, summary_lines

    print("\n".join(summary_lines(design_of(comp, args.spec), folder=path)))
    if "onnx" in comp.spec.outputs.targets:
        from metagen.backends.onnx_backend import onnx_form, weights_bytes
        from metagen.precision import onnx_precision

        if onnx_form(comp.model, weights_given=False, precision=onnx_precision(comp)) == "graph_only":
            from metagen.frontend.units import format_bytes

            print(f"  onnx weights not written ({format_bytes(weights_bytes(comp.model))} of float32); "
                  f"draw them with: metagen weights init {path}")
    return code


def _run_folder(args) -> str | None:
    """When `args.spec` is a run folder of `metagen synth`: point it at the folder's
    resolved spec, take the seed the run recorded unless --seed was given, and return
    the folder; None for a spec file."""
    if not os.path.isdir(args.spec):
        return None
    from metagen.weights import recorded_seed

    folder = args.spec
    args.spec = os.path.join(folder, "spec_resolved.yaml")
    if args.seed is None:
        args.seed = recorded_seed(folder)  # None: the spec's
    return folder


class _Tee:
    """A text stream that writes to `stream` and keeps a copy."""

    def __init__(self, stream):
        import io

        self.stream, self.copy = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def _cmd_verify(args) -> int:
    from metagen.verify import verify_spec

    folder = _run_folder(args)
    if folder is not None and (args.define or args.tiny):
        # the card describes the run's model; a changed one would be recorded under it
        print("metagen verify: error: a run folder is verified as it was built: no -D or --tiny", file=sys.stderr)
        return 2
    sink = DiagnosticSink()
    try:
        comp = _compile(args, sink)
    except CompileError as exc:
        sink.absorb(exc.diagnostics)
        return _finish(sink) or 1
    _finish(sink)
    seed = _effective_seed(args, comp)
    tee = _Tee(sys.stdout)
    ok = verify_spec(comp, seed=seed, stream=tee)
    if folder is not None:  # the run's model card records the result
        from metagen.model_card import model_card, verification_text, with_verification
        from metagen.outputs import write_files

        text = verification_text(tee.copy.getvalue(), ok, seed)
        card_path = os.path.join(folder, "README.md")
        try:
            with open(card_path, encoding="utf-8") as f:
                card = with_verification(f.read(), text)
        except (OSError, UnicodeDecodeError):
            card = None
        if card is None:  # no card, or not one synth wrote: a whole new card
            card = model_card(comp, seed, text)
        try:
            write_files({card_path: card.encode("utf-8")})
        except CompileError as exc:
            sink.extend(exc.diagnostics)
            return _finish(sink) or 1
        print(f"wrote the result to {card_path}")
    return 0 if ok else 1


def _cmd_convert(args) -> int:
    from metagen.frontend.dsl_format import tree_to_mg, tree_to_yaml
    from metagen.frontend.loader import load_tree
    from metagen.pipeline import load_spec

    sink = DiagnosticSink()
    try:
        load_spec(args.spec, sink)  # a spec that does not validate is not converted
        tree, _ = load_tree(args.spec, DiagnosticSink())
        text = tree_to_mg(tree) if args.to == "mg" else tree_to_yaml(tree)
    except CompileError as exc:
        sink.absorb(exc.diagnostics)
        return _finish(sink) or 1
    from metagen.outputs import write_files

    if args.output and args.output != "-":
        try:
            write_files({args.output: text.encode("utf-8")})
        except CompileError as exc:
            sink.extend(exc.diagnostics)
            return _finish(sink) or 1
    else:
        write_stdout(text.encode("utf-8"))
    return _finish(sink)


def _cmd_import_hf(args) -> int:
    from metagen.hf import import_hf
    from metagen.outputs import write_files

    sink = DiagnosticSink()
    stem = os.path.splitext(os.path.basename(args.output))[0]
    mg = os.path.splitext(args.output)[1].lower() == ".mg"
    try:
        text, weights, tokenizer = import_hf(args.path, args.name or stem, mg=mg, with_weights=bool(args.weights_out),
                                             with_tokenizer=bool(args.tokenizer_out))
        files = {args.output: text.encode("utf-8")}
        if tokenizer is not None:
            with open(tokenizer, "rb") as f:
                files[args.tokenizer_out] = f.read()
        if weights is not None:
            from safetensors.numpy import save

            files[args.weights_out] = save({k: weights[k] for k in sorted(weights)})
        write_files(files)
    except CompileError as exc:
        sink.absorb(exc.diagnostics)
        for path in sorted({d.loc.path for d in exc.diagnostics if d.loc.path.endswith(".json")}):
            try:  # echo the offending line of config.json under each diagnostic
                with open(path, encoding="utf-8") as f:
                    sink.add_source(path, f.read())
            except (OSError, UnicodeDecodeError):
                pass
        return _finish(sink) or 1
    if not args.tokenizer_out:
        from metagen.diagnostics import Loc
        from metagen.tokenizer import find

        found = find(args.path if os.path.isdir(args.path) else os.path.dirname(args.path) or ".")
        if found is not None:
            sink.note(Loc(found, 1, 1), "the model has a tokenizer; --tokenizer-out FILE copies it")
    return _finish(sink)


def _cmd_export_hf(args) -> int:
    from metagen.artifacts import resolved_spec
    from metagen.diagnostics import Loc
    from metagen.backends.init_code import canonical_init
    from metagen.hf_export import export_files
    from metagen.outputs import write_tree

    sink = DiagnosticSink()
    folder = _run_folder(args)  # a run folder: the spec and seed it was synthesised with
    tokenizer = args.tokenizer
    if tokenizer is None and folder is not None and os.path.isfile(os.path.join(folder, "tokenizer.json")):
        tokenizer = os.path.join(folder, "tokenizer.json")
    try:
        comp = _compile(args, sink)
        if args.weights:
            weights, where = _load_weights(args.weights), Loc(args.weights, 1, 1)
        else:
            weights, where = canonical_init(comp.model, _effective_seed(args, comp)), None
        files = export_files(comp, resolved_spec(comp), weights, args.max_shard_size, where,
                             tokenizer, Loc(tokenizer, 1, 1) if tokenizer else None)
        write_tree(args.output, files)
    except CompileError as exc:
        sink.absorb(exc.diagnostics)
        return _finish(sink) or 1
    return _finish(sink, args.werror)


def _cmd_weights_init(args) -> int:
    from metagen.weights import init_run_weights

    sink = DiagnosticSink()
    try:
        where, nbytes, seed = init_run_weights(args.run_dir, args.seed, sink)
    except CompileError as exc:
        sink.absorb(exc.diagnostics)
        return _finish(sink) or 1
    code = _finish(sink)
    print(f"wrote {where} ({nbytes:,} bytes of float32 weights, init(seed={seed}))")
    return code


def _cmd_tokenizer_train(args) -> int:
    from metagen.outputs import write_files
    from metagen.tokenizer import train

    sink = DiagnosticSink()
    special = [t for t in args.special_tokens.split(",") if t] if args.special_tokens is not None else None
    try:
        text = train(args.data, args.vocab_size, *([special] if special is not None else []))
        write_files({args.output: text.encode("utf-8")})
    except ValueError as exc:  # a vocabulary too small for the alphabet: the command line's fault
        print(f"metagen tokenizer train: error: {exc}", file=sys.stderr)
        return 2
    except CompileError as exc:
        sink.absorb(exc.diagnostics)
        return _finish(sink) or 1
    from metagen.tokenizer import vocab_size

    print(f"wrote {args.output}: byte-level BPE, {vocab_size(args.output)} tokens (asked: at most {args.vocab_size})")
    return _finish(sink)


def _cmd_fmt(args) -> int:
    from metagen.frontend.dsl_format import format_mg
    from metagen.frontend.loader import read_source
    from metagen.outputs import write_files

    sink = DiagnosticSink()
    try:
        text = read_source(args.file, sink)
        formatted = format_mg(text, args.file, sink)
        if args.check:
            if formatted != text:
                print(f"{args.file}: would reformat", file=sys.stderr)
                return 1
            return _finish(sink)
        write_files({args.file: formatted.encode("utf-8")})
    except CompileError as exc:
        sink.absorb(exc.diagnostics)
        return _finish(sink) or 1
    return _finish(sink)


def _cmd_explain(args) -> int:
    from metagen.explain import explain_text

    sink = DiagnosticSink()
    try:
        comp = _compile(args, sink)
    except CompileError as exc:
        sink.absorb(exc.diagnostics)
        return _finish(sink) or 1
    code = _finish(sink, args.werror)
    if code == 0:
        write_stdout(explain_text(comp).encode("utf-8"))
    return code


def _positive_int(flag: str, low: int = 1):
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} needs an integer, got {text!r}") from None
        if n < low:
            raise argparse.ArgumentTypeError(f"{flag} must be >= {low}, got {n}")
        return n

    return parse


def _temperature(text: str) -> float:
    try:
        t = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--temperature needs a number, got {text!r}") from None
    if not 0.0 < t < float("inf"):
        raise argparse.ArgumentTypeError(f"--temperature must be > 0, got {text}")
    return t


def _top_p(text: str) -> float:
    try:
        p = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--top-p needs a number, got {text!r}") from None
    if not 0.0 < p <= 1.0:
        raise argparse.ArgumentTypeError(f"--top-p must be in (0, 1], got {text}")
    return p


def _prompt_ids(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--prompt-ids needs comma-separated integers (1,2,3), got {text!r}") from None
    if any(i < 0 for i in ids):
        raise argparse.ArgumentTypeError("--prompt-ids must be >= 0")
    return ids


def _cmd_generate(args) -> int:
    import numpy as np

    from metagen.generate import generate_tokens, generating_families

    def misuse(message: str) -> int:
        print(f"metagen generate: error: {message}", file=sys.stderr)
        return 2

    if args.prompt_ids is None and args.prompt is None:
        return misuse("give a prompt: --prompt-ids 1,2,3 or --prompt TEXT")
    tokenizer = args.tokenizer
    if os.path.isdir(args.spec):
        if tokenizer is None and args.prompt is not None:
            from metagen.tokenizer import find

            tokenizer = find(args.spec)  # the run folder's, when synth was given one
        args.spec = os.path.join(args.spec, "spec_resolved.yaml")
    sink = DiagnosticSink()
    try:
        comp = _compile(args, sink)
        model = comp.model
        from metagen.compiler.families import FAMILIES

        if not FAMILIES[comp.ctx.family].generates:
            from metagen.diagnostics import Diagnostic, Loc

            families = ", ".join(generating_families())
            raise CompileError([Diagnostic("error", model.loc or Loc(args.spec, 1, 1),
                                           f"the {model.family} family has no decode form; families that generate: {families}")])
        weights = _load_weights(args.weights) if args.weights else None
        tokens = model.inputs[0]
        vocab = int(tokens.high)
        if tokenizer is not None:
            from metagen.diagnostics import Loc
            from metagen.tokenizer import check_fits, encode

            check_fits(tokenizer, vocab, Loc(tokenizer, 1, 1))
            text_ids = encode(tokenizer, args.prompt) if args.prompt is not None else None
    except CompileError as exc:
        sink.absorb(exc.diagnostics)
        return _finish(sink) or 1
    code = _finish(sink, args.werror)
    if code:
        return code
    if args.prompt is not None and tokenizer is not None:
        ids = text_ids
    elif args.prompt is not None:
        if vocab < 256:
            return misuse(f"--prompt TEXT is read as bytes, which needs a vocabulary of 256 or more; this model has {vocab} (use --prompt-ids)")
        ids = list(args.prompt.encode("utf-8"))
    else:
        ids = args.prompt_ids
    if not ids:
        return misuse("the prompt is empty")
    if max(ids) >= vocab:
        return misuse(f"prompt id {max(ids)} is out of the vocabulary (0 <= id < {vocab})")
    context = model.config.get("context_window") or 0
    if context and len(ids) + args.max_new_tokens > context:
        return misuse(f"prompt ({len(ids)}) + --max-new-tokens ({args.max_new_tokens}) exceeds the context window ({context})")
    prompt = np.asarray([ids], dtype=np.int64)
    if tokens.type.rank == 3:  # codebooks: the prompt in each
        prompt = np.repeat(prompt[:, None, :], tokens.type.shape[1], axis=1)
    sampled = args.temperature is not None or args.top_k is not None or args.top_p is not None
    try:
        out = generate_tokens(
            comp, args.backend, prompt, weights, _effective_seed(args, comp),
            max_new_tokens=args.max_new_tokens, do_sample=sampled, temperature=args.temperature or 1.0,
            top_k=args.top_k or 0, top_p=args.top_p or 1.0, sample_seed=_effective_seed(args, comp),
        )
    except CompileError as exc:
        sink.absorb(exc.diagnostics)
        return _finish(sink) or 1
    except (KeyError, ValueError) as exc:  # weights that do not fit the model
        print(f"{args.weights or args.spec}: error: {exc}", file=sys.stderr)
        return 1
    rows = out.reshape(-1, out.shape[-1])
    lines = [",".join(str(int(t)) for t in row) for row in rows]
    if tokenizer is not None and tokens.type.rank == 2:
        from metagen.tokenizer import decode

        lines += [decode(tokenizer, row) for row in rows]
    elif vocab <= 256 and tokens.type.rank == 2:
        lines.append(bytes(int(t) for t in rows[0]).decode("utf-8", errors="replace"))
    write_stdout(("\n".join(lines) + "\n").encode("utf-8"))
    return 0


def _design(path: str, sink: DiagnosticSink) -> dict:
    """The design of a run folder (read) or a spec (compiled in memory)."""
    from metagen.explain import design_of, load_run
    from metagen.pipeline import compile_spec

    if os.path.isdir(path):
        return load_run(path)
    return design_of(compile_spec(path, sink), path)


def _cmd_compare(args) -> int:
    from metagen.explain import compare_json, compare_text

    sink = DiagnosticSink()
    designs = []
    for path in (args.a, args.b):
        try:
            designs.append(_design(path, sink))
        except CompileError as exc:
            sink.absorb(exc.diagnostics)
    if sink.errors or len(designs) < 2:
        return _finish(sink) or 1
    code = _finish(sink)
    text = compare_json(*designs) + "\n" if args.json else compare_text(*designs)
    write_stdout(text.encode("utf-8"))
    return code


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="metagen", description="MetaGen: model specs to PyTorch, Flax and ONNX.")
    p.add_argument("--version", action="version", version=f"metagen {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, tiny=True, run_dir=False):
        if run_dir:
            sp.add_argument("spec", metavar="SPEC|RUN_DIR", help=HELP["spec"] + ", or a run folder of `metagen synth`")
        else:
            sp.add_argument("spec", metavar="SPEC", help=HELP["spec"])
        if tiny:
            sp.add_argument("--tiny", action="store_true", help=HELP["tiny"])
        sp.add_argument("-D", dest="define", action="append", type=_define, metavar="KEY=VALUE", help=HELP["define"])
        _precision_option(sp)
        sp.add_argument("--seed", type=_seed, help=HELP["seed"])
        sp.add_argument("-Werror", dest="werror", action="store_true", help=HELP["werror"])

    def command(name, summary, description):
        return sub.add_parser(name, help=summary, description=description)

    sp = command(
        "synth",
        "compile a spec to a run folder with every artifact",
        "Compile SPEC and write OUT/<run-id>/: the resolved spec, the blueprint (architecture, parameter "
        "estimate, graph), the IR, torch and flax code, ONNX and a model card; then print a summary.",
    )
    common(sp)
    sp.add_argument("--out", required=True, help="folder that receives the run folder")
    sp.add_argument(
        "--run-id", help="name of the run folder (default: run- plus a hash of the resolved spec, seed and compiler version)"
    )
    sp.set_defaults(fn=_cmd_synth)

    sp = command(
        "validate",
        "check a spec and summarise the fitted design",
        "Check SPEC and fit it; print 'OK <name> (...)' and a summary (family, parameters, binding "
        "constraint, inference memory), or located diagnostics and exit 1.",
    )
    common(sp)
    sp.set_defaults(fn=_cmd_validate)

    sp = command(
        "explain",
        "why each free dimension has its value",
        "Compile SPEC and print the fitter's reasoning: the pinned values, the rule, every width it "
        "considered (depth, parameters, the bound that stopped it) and why the chosen one won.",
    )
    common(sp)
    sp.set_defaults(fn=_cmd_explain)

    sp = command(
        "compare",
        "two designs side by side",
        "Show two designs side by side: family, resolved dimensions, parameters in total and per module, "
        "inference memory, latency estimate, binding constraint. Each RUN_OR_SPEC is a run folder written "
        "by 'metagen synth' (its blueprint is read) or a spec (compiled in memory).",
    )
    sp.add_argument("a", metavar="RUN_OR_SPEC", help="the first design: a run folder or a spec")
    sp.add_argument("b", metavar="RUN_OR_SPEC", help="the second design: a run folder or a spec")
    sp.add_argument("--json", action="store_true", help="print one JSON object (sorted keys): a, b and the fields that differ")
    sp.set_defaults(fn=_cmd_compare)

    sp = sub.add_parser("schema", help="print the JSON Schema of the YAML spec language")
    sp.set_defaults(fn=_cmd_schema)

    sp = sub.add_parser(
        "verify",
        help="run torch, flax and onnxruntime on identical weights and compare",
        description="Run every backend on identical weights and inputs and compare each output with the reference "
        "(NumPy). Given a run folder of `metagen synth`, verify its resolved spec with its seed and record the "
        "result in its model card (README.md).",
    )
    common(sp, run_dir=True)
    sp.set_defaults(fn=_cmd_verify)

    sp = sub.add_parser("convert", help="the same spec in the other frontend's syntax")
    sp.add_argument("spec", help=HELP["spec"])
    sp.add_argument("--to", required=True, choices=("mg", "yaml"), help="the syntax to write: mg (the DSL) or yaml")
    sp.add_argument("-o", dest="output", help="output file (default or '-': stdout)")
    sp.set_defaults(fn=_cmd_convert)

    sp = command(
        "import",
        "a spec (and canonical weights) from another ecosystem's model",
        "Turn another ecosystem's model description into a spec that pins its architecture.",
    )
    isub = sp.add_subparsers(dest="source", required=True)
    sp = isub.add_parser(
        "hf",
        help="a Hugging Face transformers config.json (and checkpoint)",
        description="Write a spec for the transformers model at PATH (config.json or a folder holding one); "
        "its compiled parameter count equals the reference class's. With --weights-out, also convert the "
        "folder's checkpoint (model.safetensors, a sharded index, or pytorch_model.bin) to canonical names. "
        "A config field the compiler cannot honour is an error at its line in the JSON; nothing is written then.",
    )
    sp.add_argument("path", metavar="PATH", help="config.json, or the folder holding it and the weights")
    sp.add_argument("-o", dest="output", required=True, metavar="SPEC", help="the spec to write: .yaml/.yml, or .mg for the DSL")
    sp.add_argument("--weights-out", metavar="FILE.safetensors", help="also write the checkpoint under the canonical names")
    sp.add_argument("--tokenizer-out", metavar="tokenizer.json",
                    help="also copy the folder's tokenizer.json (checked against the model's vocabulary)")
    sp.add_argument("--name", help="the spec's model name (default: the output file's stem)")
    sp.set_defaults(fn=_cmd_import_hf)

    sp = command(
        "export",
        "the compiled model in another ecosystem's format",
        "Write the compiled model (and its weights) in a format another ecosystem loads.",
    )
    esub = sp.add_subparsers(dest="target_format", required=True)
    sp = esub.add_parser(
        "hf",
        help="a folder transformers' from_pretrained loads",
        description="Write config.json, generation_config.json and the weights under transformers' names "
        "(model.safetensors, or shards with model.safetensors.index.json above --max-shard-size) to DIR. "
        "Supported: decoder LMs with learned positions (GPT2LMHeadModel) or rotary ones (LlamaForCausalLM, "
        "Qwen2ForCausalLM), text classifiers (BertForSequenceClassification), image classifiers "
        "(ViTForImageClassification), dual encoders (CLIPModel), and the diffusion U-Net as a diffusers folder "
        "(unet/ UNet2DConditionModel, text_encoder/ CLIPTextModel). "
        "A spec with a convention the reference class lacks is an error; nothing is written then.",
    )
    common(sp, run_dir=True)
    sp.add_argument("--weights", metavar="FILE.safetensors", help="canonical weights to export (default: init(seed)'s)")
    sp.add_argument("-o", dest="output", required=True, metavar="DIR", help="the folder to write (replaced whole)")
    sp.add_argument("--tokenizer", metavar="tokenizer.json",
                    help="the tokenizer to export with it (default: a run folder's tokenizer.json, if it has one)")
    sp.add_argument("--max-shard-size", type=_size, default="5GB", metavar="SIZE",
                    help="largest weights file before sharding, e.g. 5GB (default), 500MB, 2MiB")
    sp.set_defaults(fn=_cmd_export_hf)

    sp = command(
        "generate",
        "continue a prompt with a decoder LM",
        "Compile SPEC (or a run folder's resolved spec), load --weights (default: init(seed)'s) and "
        "generate with the backend's KV-cache loop: greedy, or sampled when --temperature, --top-k or "
        "--top-p is given (drawn with --seed, which also seeds init). Prints the token ids (prompt and continuation) and "
        "the text (decoded with --tokenizer, or as bytes for byte vocabularies). Families that generate: decoder_lm, audio_lm.",
    )
    common(sp, run_dir=True)
    sp.add_argument("--backend", choices=("torch", "flax", "onnx"), default="torch", help="where to run (default torch)")
    sp.add_argument("--weights", metavar="FILE.safetensors", help="canonical weights (default: init(seed)'s)")
    group = sp.add_mutually_exclusive_group()
    group.add_argument("--prompt-ids", type=_prompt_ids, metavar="1,2,3", help="the prompt as token ids")
    group.add_argument("--prompt", metavar="TEXT",
                       help="the prompt as text: encoded with --tokenizer (or a run folder's tokenizer.json), "
                       "otherwise read as UTF-8 bytes (one token per byte)")
    sp.add_argument("--tokenizer", metavar="tokenizer.json",
                    help="encode --prompt and decode the output with this tokenizer (metagen tokenizer train)")
    sp.add_argument("--max-new-tokens", type=_positive_int("--max-new-tokens"), default=32, metavar="N",
                    help="tokens to generate (default 32)")
    sp.add_argument("--temperature", type=_temperature, metavar="T", help="sampling temperature (> 0)")
    sp.add_argument("--top-k", type=_positive_int("--top-k", 0), metavar="K", help="sample among the K likeliest tokens (0: all)")
    sp.add_argument("--top-p", type=_top_p, metavar="P", help="sample from the smallest set of tokens with probability >= P")
    sp.set_defaults(fn=_cmd_generate)
    sp = command(
        "tokenizer",
        "train a tokenizer for a model's text",
        "Tokenizers for text models, as Hugging Face tokenizer.json files.",
    )
    tsub = sp.add_subparsers(dest="tokenizer_command", required=True)
    sp = tsub.add_parser(
        "train",
        help="a byte-level BPE tokenizer from text files",
        description="Train a byte-level BPE tokenizer (the `tokenizers` library) on UTF-8 text files and write "
        "it as tokenizer.json: the special tokens first (ids 0, 1, ...), the 256 bytes, then merges up to "
        "--vocab-size tokens. Deterministic. Use it with train.py --tokenizer and metagen export hf --tokenizer.",
    )
    sp.add_argument("--data", nargs="+", required=True, metavar="FILE", help="UTF-8 text files to train on")
    sp.add_argument("--vocab-size", type=int, required=True, metavar="N",
                    help="at most N tokens: the model's architecture.vocab_size")
    sp.add_argument("--special-tokens", metavar="TOKENS",
                    help="comma-separated special tokens, ids 0, 1, ... (default: <|endoftext|>)")
    sp.add_argument("-o", dest="output", required=True, metavar="tokenizer.json", help="the file to write")
    sp.set_defaults(fn=_cmd_tokenizer_train)

    sp = command(
        "weights",
        "write a run's weights",
        "Write weights a run folder's files point to but `metagen synth` did not write.",
    )
    wsub = sp.add_subparsers(dest="weights_command", required=True)
    sp = wsub.add_parser(
        "init",
        help="draw the canonical initial weights into the run's ONNX model",
        description="Draw init(seed)'s canonical weights (bit-identical to every backend's init) into RUN_DIR's "
        "ONNX model: onnx/model.onnx.data for a model above the size `metagen synth` embeds (1 GiB of float32), "
        "else onnx/model.onnx itself. One tensor at a time: memory stays near the largest tensor.",
    )
    sp.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by `metagen synth`")
    sp.add_argument("--seed", type=_seed, help="seed of the weights (default: the run's)")
    sp.set_defaults(fn=_cmd_weights_init)

    sp = sub.add_parser("fmt", help="canonical layout of a .mg file")
    sp.add_argument("file", help="the .mg file, rewritten in place")
    sp.add_argument("--check", action="store_true", help="write nothing; exit 1 if the file is not in canonical layout")
    sp.set_defaults(fn=_cmd_fmt)

    args = p.parse_args(argv)
    if getattr(args, "run_id", None) is not None:
        import re

        if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", args.run_id) or args.run_id in (".", ".."):
            p.error("--run-id must be 1-64 characters of letters, digits, '.', '_' or '-'")
    return args.fn(args)


def _terminated(signum, frame):
    """SIGTERM unwinds like an exception, so a write in progress removes its temporary
    file or folder (SIGKILL cannot be caught: the next run cleans up after it)."""
    raise SystemExit(128 + signum)


def _extra_providing(package: str) -> str | None:
    """The install extra of this distribution that requires `package` (e.g. 'onnx'),
    read from the installed metadata, so pyproject.toml stays the only list."""
    import importlib.metadata
    import re

    try:
        requires = importlib.metadata.requires("metagen") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for req in requires:
        m = re.match(r"([A-Za-z0-9_.-]+).*;\s*extra\s*==\s*['\"]([^'\"]+)['\"]", req)
        if m and m.group(1).lower() == package.lower() and m.group(2) != "all":
            return m.group(2)
    return None


def _entry(fn) -> None:
    """Run a console command. stdout is UTF-8 whatever the locale (it carries generated
    text and JSON), and a file name the locale could not decode (its bytes came in as
    surrogates) goes back out as the same bytes; stderr keeps the terminal's encoding
    and escapes what it cannot show (`\\xe9`), so a C locale never gets a
    UnicodeEncodeError. A reader that closes the pipe early (`metagen schema | head
    -c 10`) ends the command quietly."""
    out, err = {"encoding": "utf-8", "errors": "surrogateescape"}, {"errors": "backslashreplace"}
    for stream, kw in ((sys.stdout, out), (sys.stderr, err)):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(**kw)
    signal.signal(signal.SIGTERM, _terminated)
    try:
        code = fn()
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        # Python flushes stdout again at exit; point both streams at /dev/null first
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            os.dup2(devnull, fd)
        code = 1
    except ModuleNotFoundError as exc:
        # A target whose framework is an optional dependency, asked for without it.
        package = (exc.name or "").split(".")[0]
        extra = _extra_providing(package)
        if extra is None:
            raise
        print(f"metagen: error: this needs the '{package}' package: pip install 'metagen[{extra}]'", file=sys.stderr)
        code = 1
    sys.exit(code)


def console_main() -> None:
    _entry(main)


def console_metagenc() -> None:
    _entry(metagenc_main)
