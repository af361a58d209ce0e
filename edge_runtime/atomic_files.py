"""Write output files whole or not at all: write to a temporary name beside the target, then rename."""

import contextlib
import os
import pathlib
import tempfile


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path beside `path`; on normal exit rename it onto `path`, on error delete it.

    The temporary name keeps the target's suffix, because some writers (Keras' `model.save`,
    `numpy.savez`) decide the format from it. The rename is atomic on POSIX file systems, so a
    reader sees either the old file or the new one, never a half-written one — even if the process
    is killed mid-write.

    Takes: the final path (str or Path). Yields: a `pathlib.Path` to write to.
    Raises: whatever the body raises; the temporary file is removed first.
    """
    target = pathlib.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    file_descriptor, temporary_name = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix=f".partial{target.suffix}", dir=target.parent
    )
    os.close(file_descriptor)
    temporary = pathlib.Path(temporary_name)
    # Some writers refuse to overwrite an existing file; let them create it themselves.
    temporary.unlink()
    try:
        yield temporary
        if not temporary.exists():
            raise FileNotFoundError(f"{target}: the writer produced no file")
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_bytes_atomically(path, data):
    """Write `data` (bytes) to `path` whole or not at all. Returns the path as a `pathlib.Path`."""
    with atomic_output(path) as temporary:
        temporary.write_bytes(data)
    return pathlib.Path(path)


def write_text_atomically(path, text):
    """Write `text` (str, UTF-8) to `path` whole or not at all. Returns the path as a `pathlib.Path`."""
    return write_bytes_atomically(path, text.encode("utf-8"))


def remove_partials(directory):
    """Delete the temporary files a killed writer left in `directory` (names `.<stem>.*.partial*`).

    A process killed with SIGKILL runs no clean-up, so the next run of the same stage sweeps them.
    Returns the names removed.
    """
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for leftover in directory.glob(".*.partial*"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)
            removed.append(leftover.name)
    return removed
