"""Writing outputs the way build systems want: all or nothing, atomically, and
only when the bytes changed (so an unchanged output keeps its mtime)."""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from typing import BinaryIO, Callable, Union

from metagen.diagnostics import CompileError, Diagnostic, Loc


@dataclass(frozen=True)
class Streamed:
    """A file's content too large to hold in memory: `write(fh)` writes it into an
    open binary file, piece by piece (ONNX weights, see backends/onnx_backend.py).
    Every writer below accepts it wherever it accepts bytes."""

    write: Callable[[BinaryIO], None]

    def to_bytes(self) -> bytes:
        import io

        buf = io.BytesIO()
        self.write(buf)
        return buf.getvalue()


Content = Union[bytes, Streamed]


def _put(fh: BinaryIO, data: Content) -> None:
    if isinstance(data, Streamed):
        data.write(fh)
    else:
        fh.write(data)


def _same_file(a: str, b: str) -> bool:
    """Whether two files hold the same bytes (read in 16 MiB pieces)."""
    try:
        if os.path.getsize(a) != os.path.getsize(b):
            return False
        with open(a, "rb") as fa, open(b, "rb") as fb:
            while True:
                x, y = fa.read(1 << 24), fb.read(1 << 24)
                if x != y:
                    return False
                if not x:
                    return True
    except OSError:
        return False


class OutputError(CompileError):
    """An output path MetaGen will not write: a device, pipe, socket or folder."""

    def __init__(self, path: str, message: str):
        super().__init__([Diagnostic("error", Loc(path, 1, 1), message)])


def regular_file_target(path: str) -> str:
    """The file a write to `path` lands in: `path` itself, or for a symlink the file it
    points to (the link is written through, not replaced). A target that exists and is
    not a regular file is refused: replacing /dev/null or a FIFO by renaming over it is
    what an atomic write would otherwise do."""
    if path.endswith(("/", os.sep)) or os.path.basename(path) in (".", ".."):
        raise OutputError(path, "cannot write output: a name ending in '/', '.' or '..' is a folder's; name the file")
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


# Temporary files and folders are named `.metagen-<pid>-<random>` beside their target.
# A run killed mid-write leaves one behind; the next write into that folder removes
# it once it is stale (see `remove_stale_temps`).
TEMP_PREFIX = ".metagen-"
STALE_AFTER_S = 15 * 60
_TEMP_NAME = re.compile(re.escape(TEMP_PREFIX) + r"(\d+)-(?:old-)?[a-z0-9_]{8}")  # as mkstemp/mkdtemp make them


def _temp_prefix() -> str:
    return f"{TEMP_PREFIX}{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process, or not a pid we can ask about: keep
    return True


def _last_change(path: str) -> float:
    """The newest mtime in `path` (a folder's own mtime misses writes deep inside)."""
    newest = os.lstat(path).st_mtime
    if os.path.isdir(path) and not os.path.islink(path):
        for dirpath, dirs, names in os.walk(path):
            for n in dirs + names:
                try:
                    newest = max(newest, os.lstat(os.path.join(dirpath, n)).st_mtime)
                except OSError:
                    pass
    return newest


def remove_stale_temps(folder: str, now: float | None = None) -> list[str]:
    """Remove `.metagen-*` leftovers of killed runs from `folder`; the removed paths.

    A temp is stale when nothing in it changed for STALE_AFTER_S seconds AND the
    process named in it is not running on this machine. A live writer keeps its
    temp's mtimes fresh, and its pid alive; a temp of a process on another machine
    sharing the folder is protected by the age test. A reused pid only delays the
    cleanup. Only names exactly of our form are considered, so a user's own
    `.metagen-settings` is never touched. Best effort: a temp that cannot be removed
    is left alone."""
    removed = []
    now = time.time() if now is None else now
    try:
        entries = [e for e in os.scandir(folder) if e.name.startswith(TEMP_PREFIX)]
    except OSError:
        return removed
    for e in entries:
        m = _TEMP_NAME.fullmatch(e.name)
        if not m or int(m.group(1)) == os.getpid() or _pid_alive(int(m.group(1))):
            continue
        try:
            if now - _last_change(e.path) < STALE_AFTER_S:
                continue
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.path)
            else:
                os.unlink(e.path)
        except OSError:
            continue
        removed.append(e.path)
    return removed


def write_if_changed(path: str, data: Content) -> bool:
    """Atomically replace `path` with `data` unless it already holds exactly that.
    Only regular files are written (see `regular_file_target`); an OS failure
    (read-only folder, full disk, a file where a folder should be) is an OutputError
    at `path`, and leaves neither a temporary file nor a changed target."""
    real = regular_file_target(path)
    try:
        return _write_if_changed(real, data)
    except OSError as exc:
        raise OutputError(path, f"cannot write output: {exc.strerror or exc}") from None


def _write_if_changed(path: str, data: Content) -> bool:
    if not isinstance(data, Streamed):
        try:
            with open(path, "rb") as fh:
                if fh.read(len(data) + 1) == data:
                    return False
        except OSError:
            pass
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    remove_stale_temps(d)
    mode = _file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(), dir=d)
    try:
        with open(fd, "wb") as fh:
            _put(fh, data)
        if isinstance(data, Streamed) and _same_file(tmp, path):
            os.unlink(tmp)  # streamed content is compared once written: unchanged keeps its mtime
            return False
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return True


def write_files(files: dict[str, Content]) -> None:
    """Write several outputs (path -> bytes), each atomically. Every target is checked
    before the first is written, so a refused one leaves nothing half-written."""
    for path in files:
        regular_file_target(path)
    for path, data in files.items():
        write_if_changed(path, data)


def write_tree(root: str, files: dict[str, Content]) -> None:
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


def _write_tree(root: str, files: dict[str, Content]) -> None:
    parent = os.path.dirname(os.path.abspath(root)) or "."
    os.makedirs(parent, exist_ok=True)
    remove_stale_temps(parent)
    tmp = tempfile.mkdtemp(prefix=_temp_prefix(), dir=parent)
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        for rel, data in sorted(files.items()):
            p = os.path.join(tmp, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as fh:
                _put(fh, data)
        if os.path.isdir(root):
            old = tempfile.mkdtemp(prefix=_temp_prefix() + "old-", dir=parent)
            os.rmdir(old)
            os.replace(root, old)
            os.replace(tmp, root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# File names GNU make has no spelling for, and why.
_MAKE_UNWRITABLE = {
    "a control character (newline, tab, ...)": re.compile(r"[\x00-\x1f\x7f]"),
    "';' (it starts a recipe)": re.compile(r";"),
    "'%' (it makes a rule a pattern rule)": re.compile(r"%"),
    "a trailing backslash": re.compile(r"\\$"),
    "the archive-member form 'lib(member)'": re.compile(r"\(.*\)$"),
    "a special target's name": re.compile(r"^\.[A-Z_]+$"),
}
# escaped with a backslash (`|` only in prerequisites: a target's `\|` stays as is)
_MAKE_SPECIAL = " #:*?[]"


def make_word(path: str, target: bool, depfile: str) -> str:
    """`path` spelled so GNU make reads back exactly that file name, as a rule's target
    or as a prerequisite: backslash before its metacharacters (backslashes before
    them doubled), `$$` for `$`, `$(strip =)` for `=` (a bare one would make the line a
    variable assignment: an import named `SHELL=x.mg`), `$(strip ~)` for a leading `~`.
    A name make has no spelling for is a diagnostic at the depfile."""
    for what, pattern in _MAKE_UNWRITABLE.items():
        if pattern.search(path):
            raise OutputError(depfile, f"cannot name {path!r} in a make depfile: make has no spelling for {what} in a file name; rename the file")
    special = _MAKE_SPECIAL if target else _MAKE_SPECIAL + "|"
    out, backslashes = [], 0
    for ch in path:
        if ch == "\\":
            backslashes += 1
            continue
        if ch in special:
            out.append("\\" * (2 * backslashes + 1) + ch)
        else:
            out.append("\\" * backslashes + {"$": "$$", "=": "$(strip =)"}.get(ch, ch))
        backslashes = 0
    word = "".join(out)
    return "$(strip ~)" + word[1:] if word.startswith("~") else word


def depfile_text(target: str, deps: list[str], depfile: str) -> str:
    """A make rule `target: deps` plus an empty rule per prerequisite (gcc's -MP: a
    deleted import does not break make). Raises OutputError (at `depfile`) for a file
    name make cannot spell."""
    deps = list(dict.fromkeys(deps))  # a file imported twice is one prerequisite
    lines = [f"{make_word(target, True, depfile)}: " + " ".join(make_word(d, False, depfile) for d in deps)]
    for d in deps:
        lines.append(f"{make_word(d, True, depfile)}:")
    return "\n".join(lines) + "\n"
