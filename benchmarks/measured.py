"""Run a command as a child process and print what it cost: `measured <wall s> <CPU s> <peak RSS KiB>`.

    python benchmarks/measured.py /path/to/venv/bin/mnist-edge predict MODEL digit.png

The command runs as it is, with this process's environment and working directory. A small
process starts it because Linux counts a child's peak RSS from before its exec: started straight
from the benchmark, which holds hundreds of MiB, every command would seem to hold as much.
The command's own output is discarded; a failure ends this with its status and its last lines.
"""

import os
import subprocess
import sys
import time


def main(command):
    if not command:
        print("usage: python benchmarks/measured.py COMMAND [ARGUMENTS]", file=sys.stderr)
        return 2
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    errors_text = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    child.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.stderr.write(errors_text.decode(errors="replace")[-1000:])
        return code if code > 0 else 1
    print("measured", f"{elapsed:.6f}", f"{usage.ru_utime + usage.ru_stime:.6f}", usage.ru_maxrss, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
