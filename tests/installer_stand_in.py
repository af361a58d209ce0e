"""A stand-in for `mnist-edge` in the fast rollout tests: `install` and `status` without a bundle.

    python tests/installer_stand_in.py install BUNDLE --root ROOT ...
    python tests/installer_stand_in.py status --root ROOT --json

`install` appends its arguments to ROOT/installs.log, logs one line, and exits with the status
written in ROOT/exit-status (0 without it), as `mnist-edge install` would after a gate refusal (3)
or a rollback (4). `status` prints the JSON shape the role reads. tests/test_fleet_rollout.py's
slow test runs the real `mnist-edge install` instead.
"""

import json
import pathlib
import sys


def root_of(arguments):
    return pathlib.Path(arguments[arguments.index("--root") + 1])


def main(arguments):
    root = root_of(arguments)
    root.mkdir(parents=True, exist_ok=True)
    if arguments[0] == "install":
        with open(root / "installs.log", "a") as log:
            log.write(" ".join(arguments) + "\n")
        status_file = root / "exit-status"
        status = int(status_file.read_text()) if status_file.exists() else 0
        print(f"mnist-edge install: stand-in exits {status}", file=sys.stderr)
        return status
    if arguments[0] == "status":
        print(json.dumps({"current": "stand-in", "last": {"outcome": "stand-in"}, "rollbacks": 0}))
        return 0
    print(f"installer_stand_in.py: unknown command {arguments[0]}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
