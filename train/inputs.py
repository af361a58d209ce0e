"""`python -m train.inputs check|record STAMP [NAME=PATH ...]`: the data a build read, for make.

make decides from file times alone, and DATA=, LABELS= and EXTRA_DATA= are command-line words, not
files: a model trained from MNIST looked up to date for `make train DATA=other.npz`. So the train
recipe records, in STAMP, each name with its path and the size and sha256 of every file behind it
(a directory's files, and the labels.txt that train reads beside the data). Before each run, make
asks `check`, which prints "changed" when the inputs given now differ from the recorded ones; the
Makefile then makes the model out of date. `check` writes nothing, so `make -n` and `make -q`
answer truthfully and change nothing.

Standard library only: it runs before the venv exists, with the system's python3.
"""

import hashlib
import os
import pathlib
import sys

# train/data.py reads class names from this file beside the data when no labels file is given.
LABELS_BESIDE_DATA = "labels.txt"


def file_lines(path):
    """One line per file behind `path` (itself, or a directory's files, sorted): size and sha256."""
    path = pathlib.Path(path)
    if path.is_dir():
        files = sorted(child for child in path.iterdir() if child.is_file())
    elif path.is_file():
        files = [path]
    else:
        return [f"  {path}: missing"]
    lines = []
    for file in files:
        digest = hashlib.sha256()
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        lines.append(f"  {file}: {file.stat().st_size} bytes, sha256 {digest.hexdigest()}")
    return lines


def describe(inputs):
    """The stamp's text for `inputs`, (name, path or '') pairs in order; an empty path is the default."""
    lines = []
    for name, path in inputs:
        lines.append(f"{name}={path}")
        if path:
            lines.extend(file_lines(path))
    data = dict(inputs).get("DATA")
    if data and not dict(inputs).get("LABELS"):
        beside = pathlib.Path(data) if pathlib.Path(data).is_dir() else pathlib.Path(data).parent
        if (beside / LABELS_BESIDE_DATA).is_file():
            lines.append(f"labels beside DATA={beside / LABELS_BESIDE_DATA}")
            lines.extend(file_lines(beside / LABELS_BESIDE_DATA))
    return "\n".join(lines) + "\n"


def changed(stamp, inputs):
    """Whether `stamp` is missing or records other inputs than `inputs`."""
    try:
        return pathlib.Path(stamp).read_text(encoding="utf-8") != describe(inputs)
    except FileNotFoundError:
        return True


def record(stamp, inputs):
    """Write `describe(inputs)` to `stamp`, whole or not at all."""
    stamp = pathlib.Path(stamp)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    temporary = stamp.with_name(f".{stamp.name}.partial")
    temporary.write_text(describe(inputs), encoding="utf-8")
    os.replace(temporary, stamp)


def main(argv):
    if len(argv) < 2 or argv[0] not in ("check", "record") or any("=" not in item for item in argv[2:]):
        print("usage: python -m train.inputs check|record STAMP [NAME=PATH ...]", file=sys.stderr)
        return 2
    action, stamp = argv[0], argv[1]
    inputs = [tuple(item.split("=", 1)) for item in argv[2:]]
    try:
        if action == "record":
            record(stamp, inputs)
        elif changed(stamp, inputs):
            print("changed")
    except OSError as error:
        print(f"error: {error.filename or stamp}: {error.strerror or error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
