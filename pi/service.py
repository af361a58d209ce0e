"""The emulated Pi's service manager for pi-check's `install` runs: systemd's part, with the standard library only.

    python3 pi/service.py restart FOLDER -- COMMAND ARGUMENT...
    python3 pi/service.py stop FOLDER

The rootfs of `make pi-check` has no systemd running (a chroot), so `mnist-edge install
--restart-command` runs this with the device's own Python 3; tests/test_install.py uses it on x86 too. `restart` stops the process it started
last (SIGTERM as systemd sends it, SIGKILL after STOP_SECONDS), then starts COMMAND in a session of
its own with stdin from /dev/null and stdout and stderr appended to FOLDER/service.log, and writes
its pid to FOLDER/service.pid. `stop` does the first half. Copied into the device's home by pi/tasks.py.
"""

import os
import pathlib
import signal
import subprocess
import sys
import time

STOP_SECONDS = 60  # serve under emulation finishes its requests and exits well within this


def alive(pid):
    """True while `pid` exists and is not a zombie (the process is not our child: we cannot wait for it)."""
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def stop(folder):
    pid_file = folder / "service.pid"
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_file.unlink()
        return
    deadline = time.monotonic() + STOP_SECONDS
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink()


def restart(folder, command):
    stop(folder)
    with open(folder / "service.log", "ab") as log:
        log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} start: {' '.join(command)}\n".encode())
        log.flush()
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    (folder / "service.pid").write_text(f"{process.pid}\n")


def main(argv):
    if len(argv) >= 2 and argv[0] == "stop":
        folder = pathlib.Path(argv[1])
        folder.mkdir(parents=True, exist_ok=True)
        stop(folder)
        return 0
    if len(argv) >= 4 and argv[0] == "restart" and argv[2] == "--":
        folder = pathlib.Path(argv[1])
        folder.mkdir(parents=True, exist_ok=True)
        restart(folder, argv[3:])
        return 0
    print("usage: service.py restart FOLDER -- COMMAND ARGUMENT... | stop FOLDER", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
