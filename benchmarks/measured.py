"""Run a module or a script as `python` would, then print its peak memory: `first-prediction <KiB>`.

    python benchmarks/measured.py -m edge_runtime predict MODEL digit.png
    python benchmarks/measured.py benchmarks/bare_predict_png.py MODEL digit.png

`make bench` runs both sides of a comparison through this, so that they pay the same for it.
"""

import runpy
import sys


def main(argv):
    if len(argv) >= 2 and argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        run = lambda: runpy.run_module(argv[1], run_name="__main__", alter_sys=True)  # noqa: E731
    elif argv:
        sys.argv = list(argv)
        run = lambda: runpy.run_path(argv[0], run_name="__main__")  # noqa: E731
    else:
        print("usage: python benchmarks/measured.py (-m MODULE | SCRIPT) [ARGUMENTS]", file=sys.stderr)
        return 2
    status = 0
    try:
        run()
    except SystemExit as exit:
        status = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    with open("/proc/self/status") as process_status:
        peak = next(int(line.split()[1]) for line in process_status if line.startswith("VmHWM:"))
    print("first-prediction", peak, flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
