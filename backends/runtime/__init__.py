"""The runtime of the generated training programs, as modules that import, lint and
are tested like any other code.

`data` is the numpy side both programs share (batches, the objective's data
transforms, the learning-rate schedule, the command line); `torch_train` and
`flax_train` are each backend's optimizer, step, checkpoints and loop. The training
emitters (backends/train_torch.py, train_flax.py) copy their source into every
train.py with `runtime_source`, so a program stays one standalone file that never
imports metagen. A runtime module reads the names the program binds before it
from `program` (stand-ins, not copied) and its sibling runtime modules' names
through `from metagen.backends.runtime... import` lines, which the copy drops: in
train.py they are all one namespace.

The source is read as text, not imported, so emitting a program needs neither
torch nor jax.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class RuntimeSource:
    """A runtime module split for copying: its top-level imports other than
    metagen's (one statement each) and the code after them, verbatim."""

    imports: tuple[str, ...]
    body: str


def runtime_source(name: str) -> RuntimeSource:
    """Runtime module `name` ("data", "torch_train", "flax_train") split for copying."""
    return split_source(
        name, resources.files(__name__).joinpath(f"{name}.py").read_text(encoding="utf-8")
    )


def split_source(name: str, text: str) -> RuntimeSource:
    """`text` without its docstring and its metagen imports. Every top-level import
    must come before the first other statement, so the body is one verbatim block."""
    tree = ast.parse(text)
    imports: list[str] = []
    end = 0
    first_code = len(tree.body)
    for i, stmt in enumerate(tree.body):
        if i == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            end = stmt.end_lineno
            continue
        if not isinstance(stmt, (ast.Import, ast.ImportFrom)):
            first_code = i
            break
        end = stmt.end_lineno
        if isinstance(stmt, ast.Import):
            imports += [ast.unparse(ast.Import(names=[alias])) for alias in stmt.names]
        elif stmt.module != "__future__" and not (stmt.module or "").startswith("metagen"):
            imports.append(ast.unparse(stmt))
    late = [s.lineno for s in tree.body[first_code:] if isinstance(s, (ast.Import, ast.ImportFrom))]
    if late:
        raise ValueError(
            f"runtime module {name}: top-level import at line {late[0]} after other code"
        )
    body = "\n".join(text.splitlines()[end:]).strip("\n")
    return RuntimeSource(tuple(imports), body)


def _module_of(statement: str) -> str:
    node = ast.parse(statement).body[0]
    return node.names[0].name if isinstance(node, ast.Import) else node.module


def import_block(statements) -> list[str]:
    """The import lines of a program, isort style: standard library, then third
    party; in each, `import x` lines before `from x import y` lines, sorted."""
    groups: tuple[list[str], list[str]] = ([], [])
    for s in sorted(set(statements), key=lambda s: (s.startswith("from "), _module_of(s), s)):
        top = _module_of(s).split(".")[0]
        groups[top not in sys.stdlib_module_names].append(s)
    lines: list[str] = []
    for group in groups:
        if group:
            lines += group + [""]
    return lines
