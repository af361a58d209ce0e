"""A stand-in for systemd in the install tests: restart and stop one service process, recorded in a folder.

    python tests/service_manager.py restart FOLDER -- COMMAND ARGUMENT...
    python tests/service_manager.py stop FOLDER

`restart` stops the process it started last (SIGTERM, as systemd does, then waits for it), starts
COMMAND detached with its output appended to FOLDER/service.log, and records its pid in
FOLDER/service.pid. `mnist-edge install --restart-command` runs it; the tests have no systemd.
"""

import os
import pathlib
import signal
import subprocess
import sys
import time


def stop(folder):
    pid_file = folder / "service.pid"
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_file.unlink(missing_ok=True)
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child: poll until it is gone
            finished = 0 if os.path.exists(f"/proc/{pid}") and not is_zombie(pid) else pid
        if finished:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)


def is_zombie(pid):
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def restart(folder, command):
    stop(folder)
    with open(folder / "service.log", "ab") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    (folder / "service.pid").write_text(str(process.pid))


def main(argv):
    action, folder = argv[0], pathlib.Path(argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    if action == "stop":
        stop(folder)
    elif action == "restart" and argv[2:3] == ["--"] and len(argv) > 3:
        restart(folder, argv[3:])
    else:
        print("usage: service_manager.py restart FOLDER -- COMMAND... | stop FOLDER", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
