"""Writing outputs the way build systems want: all or nothing, atomically, and
only when the bytes changed (so an unchanged output keeps its mtime)."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile

from metagen.diagnostics import CompileError, Diagnostic, Loc


class OutputError(CompileError):
    """An output path MetaGen will not write: a device, pipe, socket or folder."""

    def __init__(self, path: str, message: str):
        super().__init__([Diagnostic("error", Loc(path, 1, 1), message)])


def regular_file_target(path: str) -> str:
    """The file a write to `path` lands in: `path` itself, or for a symlink the file it
    points to (the link is written through, not replaced). A target that exists and is
    not a regular file is refused: replacing /dev/null or a FIFO by renaming over it is
    what an atomic write would otherwise do."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        return real
    except OSError as exc:
        raise OutputError(path, f"cannot write output: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(path, "cannot write output: it is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(path, "cannot write output: not a regular file (a device, pipe or socket); MetaGen writes regular files only")
    return real


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
    """Atomically replace `path` with `data` unless it already holds exactly that.
    Only regular files are written (see `regular_file_target`)."""
    path = regular_file_target(path)
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


def write_files(files: dict[str, bytes]) -> None:
    """Write several outputs (path -> bytes), each atomically. Every target is checked
    before the first is written, so a refused one leaves nothing half-written; an OS
    failure (read-only folder, full disk, a file where a folder should be) is a
    diagnostic at the path, not a traceback."""
    for path in files:
        regular_file_target(path)
    for path, data in files.items():
        try:
            write_if_changed(path, data)
        except OSError as exc:
            raise OutputError(path, f"cannot write output: {exc.strerror or exc}") from None


def write_tree(root: str, files: dict[str, bytes]) -> None:
    """Write every file of a tree under `root`; the tree appears whole or not at all
    (built in a sibling temporary folder, then renamed into place). OS failures are
    diagnostics at `root`."""
    if os.path.lexists(root) and not os.path.isdir(root):
        raise OutputError(root, "cannot write the run folder: a file of that name exists")
    parent = os.path.dirname(os.path.abspath(root))
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise OutputError(parent, "cannot write the run folder here: this is a file, not a folder")
    try:
        _write_tree(root, files)
    except OSError as exc:
        raise OutputError(root, f"cannot write the run folder: {exc.strerror or exc}") from None


def _write_tree(root: str, files: dict[str, bytes]) -> None:
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
