"""The one rule for the files genlab writes and reads in run and sweep folders.

Writing (`replaced_atomically`, `write_text_atomically`, `write_bytes_atomically`): every file is written to a fresh
temporary file, made exclusively (O_CREAT | O_EXCL, a random name: never a fixed `.partial` that a link could have
taken) in the target's own folder, synced, then renamed over its target; the target must be a regular file or
absent, and its folder must not be a link. A link, a folder, a FIFO or a device in the target's place is refused in
one line and left as it is: genlab never writes through a link. A write that fails (a full disk, a read-only
folder) leaves the previous file whole and no temporary file behind, and is one line too.

Reading (`read_bytes`): the file must be a regular file, not a link (O_NOFOLLOW), a FIFO (opened without blocking,
then refused) or a device, in a folder that is not a link either, and no larger than the reader's limit: a link to
/dev/zero or a 10 GB file planted in a run folder is refused, not read until memory runs out.

The folder is opened once (O_DIRECTORY | O_NOFOLLOW) and every step after that is relative to it, so that a link
put in place of the folder or the file while genlab works is never followed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from genlab.errors import FileRefusedError, one_line

MiB = 2**20


def replaced_atomically(path: Path, mode: str = "w", what: str = "") -> contextlib.AbstractContextManager[IO]:
    """A file to write `path`'s new content to; on leaving the block, it replaces `path` in one rename.

    A run stopped while writing (a full disk, kill -9, a lost node) leaves the previous `path` whole, or none,
    never half a file. FileRefusedError (one line, naming `what` and `path`) for a target that is not a regular
    file, a folder that is a link, and any OSError while writing; the temporary file is removed.
    """
    return _replaced(Path(path), mode, f"{what} " if what else "")


@contextlib.contextmanager
def _replaced(path: Path, mode: str, what: str) -> Iterator[IO]:
    folder = _open_folder(path.parent, f"write {what}{path}", make=True)
    temporary = None
    try:
        _check_replaceable(folder, path, what)  # before the work of writing, and again before the rename
        temporary, file = _fresh_file(folder, path.name, mode)
        with file:
            yield file
            file.flush()
            os.fsync(file.fileno())  # the bytes are on disk before the name points at them
        _check_replaceable(folder, path, what)
        os.replace(temporary, path.name, src_dir_fd=folder, dst_dir_fd=folder)
        temporary = None
        os.fsync(folder)  # and the rename itself survives a power cut
    except OSError as err:
        if isinstance(err, FileRefusedError):
            raise
        previous = "the previous one, if any, is unchanged"
        raise FileRefusedError(f"could not write {what}{path}: {_cause(err)}; {previous}") from None
    finally:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=folder)
        os.close(folder)


def write_text_atomically(path: Path, text: str, what: str = "") -> None:
    with replaced_atomically(path, "w", what) as file:
        file.write(text)


def write_bytes_atomically(path: Path, data: bytes, what: str = "") -> None:
    with replaced_atomically(path, "wb", what) as file:
        file.write(data)


def check_replaceable(path: Path, what: str = "") -> None:
    """Refuse now, before long work, what `replaced_atomically` would refuse at its end: a link, a folder, a FIFO in
    `path`'s place, or a link in its folder's."""
    path, what = Path(path), f"{what} " if what else ""
    if not os.path.lexists(path.parent):
        return  # made when the file is written
    folder = _open_folder(path.parent, f"write {what}{path}", make=False)
    try:
        _check_replaceable(folder, path, what)
    finally:
        os.close(folder)


def read_bytes(path: Path, limit: int) -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them; FileRefusedError (one line) for a link, a
    FIFO, a device or a folder in its place or its folder's, or a larger file; FileNotFoundError if it is absent."""
    path = Path(path)
    folder = _open_folder(path.parent, f"read {path}", make=False)
    try:
        try:  # O_NONBLOCK: opening a FIFO would otherwise wait for a writer, for ever
            descriptor = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder)
        except OSError as err:
            if err.errno == errno.ELOOP:  # the name is a link
                raise FileRefusedError(f"refused to read {path}: {_described(folder, path.name)}") from None
            if isinstance(err, FileNotFoundError):
                raise
            raise FileRefusedError(f"could not read {path}: {_cause(err)}") from None
    finally:
        os.close(folder)
    with open(descriptor, "rb") as file:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise FileRefusedError(f"refused to read {path}: it is {_kind(status.st_mode)}, not a regular file")
        if status.st_size > limit:
            raise FileRefusedError(
                f"refused to read {path}: {_size(status.st_size)}, more than the {_size(limit)} genlab reads of it"
            )
        data = file.read(limit + 1)  # a file that grows while it is read is bounded too
    if len(data) > limit:
        raise FileRefusedError(f"refused to read {path}: more than the {_size(limit)} genlab reads of it (it grew)")
    return data


def kind_of(path: Path) -> str | None:
    """What is at `path`, the name itself and not what a link points to: None for a regular file or a folder,
    else "a link to ...", "a FIFO", "a device", "a socket" (what genlab neither writes nor reads in a run folder)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISLNK(mode):
        return f"a link to {os.readlink(path)}"
    return _kind(mode)


def _open_folder(folder: Path, action: str, make: bool) -> int:
    """A descriptor of `folder` (made if `make` and absent); refused if it is a link, or not a folder."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        try:
            return os.open(folder, flags)
        except FileNotFoundError:
            if not make:
                raise
            folder.mkdir(parents=True, exist_ok=True)
            return os.open(folder, flags)
    except NotADirectoryError:  # also what O_DIRECTORY | O_NOFOLLOW answers for a link
        if kind := kind_of(folder):
            raise FileRefusedError(f"refused to {action}: its folder {folder} is {kind}; never followed") from None
        raise FileRefusedError(f"refused to {action}: {folder} is a file, not a folder") from None
    except FileNotFoundError:
        raise
    except OSError as err:
        raise FileRefusedError(f"could not {action}: {_cause(err)}") from None


def _check_replaceable(folder: int, path: Path, what: str) -> None:
    try:
        mode = os.stat(path.name, dir_fd=folder, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise FileRefusedError(
            f"refused to write {what}{path}: {_described(folder, path.name)} is in its place; genlab replaces only "
            f"a regular file: move it away, or write elsewhere"
        )


def _fresh_file(folder: int, name: str, mode: str) -> tuple[str, IO]:
    """A new file beside `name`, made by this call alone: O_EXCL fails rather than open anything already there."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(100):
        temporary = f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            descriptor = os.open(temporary, flags, 0o666, dir_fd=folder)  # 0o666 less the umask, as open() makes
        except FileExistsError:
            continue
        encoding = None if "b" in mode else "utf-8"
        return temporary, open(descriptor, mode, encoding=encoding)  # noqa: SIM115 (closed by the caller's with-block)
    raise FileExistsError(f"no fresh temporary name beside {name}")


def _described(folder: int, name: str) -> str:
    mode = os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode
    if stat.S_ISLNK(mode):
        return f"a link (to {os.readlink(name, dir_fd=folder)})"
    return _kind(mode)


def _kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISLNK, "a link"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "a regular file"


def _cause(err: OSError) -> str:
    return (err.strerror or one_line(err)) + (f" ({err.filename})" if err.filename else "")


def _size(num_bytes: int) -> str:
    return f"{num_bytes / MiB:,.1f} MiB" if num_bytes >= MiB else f"{num_bytes:,} bytes"
