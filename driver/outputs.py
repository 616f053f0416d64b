"""Writing outputs the way build systems want: all or nothing, atomically, and
only when the bytes changed (so an unchanged output keeps its mtime)."""

from __future__ import annotations

import os
import shutil
import tempfile


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _file_mode(path: str) -> int:
    """The mode a plain `open(path, "w")` would give (mkstemp's is 0600): the
    existing file's mode when replacing one, else 0666 less the umask."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def write_if_changed(path: str, data: bytes) -> bool:
    """Atomically replace `path` with `data` unless it already holds exactly that."""
    try:
        with open(path, "rb") as fh:
            if fh.read() == data:
                return False
    except OSError:
        pass
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    mode = _file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=".metagen-", dir=d)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return True


def write_tree(root: str, files: dict[str, bytes]) -> None:
    """Write every file of a tree under `root`; the tree appears whole or not at all
    (built in a sibling temporary folder, then renamed into place)."""
    parent = os.path.dirname(os.path.abspath(root)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".metagen-", dir=parent)
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        for rel, data in sorted(files.items()):
            p = os.path.join(tmp, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as fh:
                fh.write(data)
        if os.path.isdir(root):
            old = tempfile.mkdtemp(prefix=".metagen-old-", dir=parent)
            os.rmdir(old)
            os.replace(root, old)
            os.replace(tmp, root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def depfile_text(target: str, deps: list[str]) -> str:
    def esc(p: str) -> str:
        return p.replace("\\", "\\\\").replace(" ", "\\ ").replace("#", "\\#").replace("$", "$$")

    deps = list(dict.fromkeys(deps))  # a file imported twice is one prerequisite
    lines = [f"{esc(target)}: " + " ".join(esc(d) for d in deps)]
    for d in deps:
        lines.append(f"{esc(d)}:")  # phony rules: a deleted import does not break make
    return "\n".join(lines) + "\n"
