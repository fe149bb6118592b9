"""Atomic writes: a file appears whole under its name, or not at all."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

from safetensors import SafetensorError

from .errors import UserError


def _create_temporary(path: Path) -> tuple[Path, int]:
    """Create an empty, uniquely named file beside `path`; return it and its mode, 0666 less the umask.

    Not tempfile.mkstemp: it creates mode 0600, and the rename would carry that onto `path` whatever the
    umask. Here the kernel applies the umask itself, as for any open(..., "w"), and we note the mode it gave: some writers (safetensors >= 0.8) replace our file by their own
    0600 temporary, so the mode is set again after the write. We never read the umask: os.umask can
    only be read by setting it, which for that moment changes it for every thread (the web UI writes
    from threads), and a value cached at import would miss a later umask change.
    """
    for _ in range(100):
        temporary = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            handle = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        try:
            return temporary, stat.S_IMODE(os.fstat(handle).st_mode)
        finally:
            os.close(handle)
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path.parent))


def _set_mode(path: Path, temporary: Path, fresh_mode: int) -> None:
    """Give the written `temporary` the mode of the `path` it replaces, as editors do on save (a file
    someone made private, shared or read-only stays so), else `fresh_mode`. Done after the write, so a
    read-only mode cannot stop it."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = fresh_mode
    if stat.S_IMODE(os.stat(temporary).st_mode) != mode:
        os.chmod(temporary, mode)


def staging_folder(parent: Path, prefix: str) -> Path:
    """A new, uniquely named folder in `parent` in which to build what then replaces a folder whole (a
    checkpoint, a pipeline). Mode 0777 less the umask, as `mkdir` gives: tempfile.mkdtemp would make it
    0700, and the rename would keep that."""
    for _ in range(100):
        folder = Path(parent) / f"{prefix}{secrets.token_hex(4)}"
        try:
            folder.mkdir(mode=0o777)
        except FileExistsError:
            continue
        return folder
    raise FileExistsError(errno.EEXIST, "no free staging name", str(parent))


def replace_folder(staging: Path, final: Path) -> None:
    """Put the finished `staging` folder (made by `staging_folder` beside `final`) in place of `final`. An old
    `final` is renamed aside first and removed only after, so that a crash in between leaves one of the two whole."""
    if not final.exists():
        os.replace(staging, final)
        return
    aside = staging_folder(final.parent, f".{final.name}.old-")
    os.replace(final, aside)  # onto the empty folder just made: a rename, so the name is ours alone
    os.replace(staging, final)
    shutil.rmtree(aside, ignore_errors=True)


def apply_umask(staging: Path) -> None:
    """Give everything written into `staging` (made by `staging_folder`) the mode a new file or folder gets
    under the umask, which the staging folder's own mode shows: some writers (safetensors) make their files
    private whatever the umask."""
    folder_mode = stat.S_IMODE(Path(staging).stat().st_mode)
    for path in Path(staging).rglob("*"):
        if not path.is_symlink():
            os.chmod(path, folder_mode if path.is_dir() else folder_mode & 0o666)


def _host() -> str:
    """This machine's name, letters and digits only. A staging folder's name carries it and the writer's pid:
    a later writer can then tell a folder whose writer was killed from one still being written, even on a
    disk that other machines share."""
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname()) or "host"


def _running(pid: int) -> bool:
    """Whether process `pid` exists on this machine."""
    try:
        os.kill(pid, 0)  # signal 0: no signal, only the check that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_abandoned_staging(final: Path) -> None:
    """Remove the staging folders beside `final` that a killed writer on this machine left (a build or an
    export killed midway): only those whose process is gone. Not on Windows, where os.kill ends a process."""
    if os.name == "nt":
        return
    pattern = re.compile(rf"\.{re.escape(final.name)}\.{_host()}-(\d+)-[0-9a-f]{{8}}")
    for sibling in final.parent.iterdir():
        found = pattern.fullmatch(sibling.name)
        if found and sibling.is_dir() and not _running(int(found.group(1))):
            shutil.rmtree(sibling, ignore_errors=True)


@contextlib.contextmanager
def replaced_folder(final: Path) -> Iterator[Path]:
    """Yield an empty folder beside `final` to write into; when the block ends, its files (under the user's
    umask, fsynced) take `final`'s place whole. An error or a kill inside the block leaves the old `final` as it
    was; a kill leaves the staging folder too, which the next replaced_folder of `final` removes."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_staging(final)
    staging = staging_folder(final.parent, f".{final.name}.{_host()}-{os.getpid()}-")  # beside it: the rename stays on one disk
    try:
        yield staging
        apply_umask(staging)
        for written in staging.rglob("*"):
            if written.is_file() and not written.is_symlink():
                with open(written, "rb") as handle:
                    os.fsync(handle.fileno())
        replace_folder(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsynced and renamed onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary, fresh_mode = _create_temporary(path)
    try:
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        _set_mode(path, temporary, fresh_mode)
        os.replace(temporary, path)
    except (OSError, SafetensorError) as error:
        if isinstance(error, SafetensorError) and "I/O error" not in str(error):
            raise
        reason = getattr(error, "strerror", None) or str(error).split(": ")[-1]
        kept = f"; the previous {path.name} is intact" if path.exists() else ""
        raise UserError(f"{path}: could not write it ({reason}){kept}; free disk space or choose another folder") from None
    finally:
        temporary.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
