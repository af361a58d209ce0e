"""`python -m export.check_set DIR`: is the export in DIR a whole set? (exit 0 yes, 1 no, with the reason)

The Makefile asks this before trusting `manifest.json` as up to date: a manifest whose files are
missing or changed means the set is incomplete, and the export runs again.
"""

import pathlib
import sys

from edge_runtime import errors, manifest


def check(directory):
    """Return None when every file the manifest in `directory` lists is there as recorded, else why not."""
    directory = pathlib.Path(directory)
    try:
        document = manifest.read_manifest(directory / manifest.MANIFEST_NAME)
        for name in document.files:
            manifest.verify_against_manifest(directory / name, document)
    except errors.EdgeRuntimeError as error:
        return str(error)
    return None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m export.check_set DIR", file=sys.stderr)
        return 2
    problem = check(argv[0])
    if problem:
        print(f"incomplete export: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
