"""`python -m edge_runtime.cli.cold_start MODEL`: what a user's script does, from process start to one
prediction, then the process's peak memory. `bench` runs it in a fresh process to measure both.

Prints one line, `first-prediction <peak RSS in KiB>`.
"""

import sys


def peak_rss_kib():
    """This process's peak resident memory in KiB.

    VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child forked from a big parent
    would report the parent's.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def report_peak_rss():
    print("first-prediction", peak_rss_kib(), flush=True)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not 1 <= len(argv) <= 3:
        print("usage: python -m edge_runtime.cli.cold_start MODEL [BACKEND] [THREADS]", file=sys.stderr)
        return 2
    import numpy as np

    from edge_runtime import Classifier

    backend = argv[1] if len(argv) > 1 and argv[1] else None
    threads = int(argv[2]) if len(argv) > 2 and int(argv[2]) > 0 else None
    model = Classifier.load(argv[0], backend=backend, threads=threads)
    model.predict(np.zeros(model.input_shape, np.uint8))
    report_peak_rss()
    return 0


if __name__ == "__main__":
    sys.exit(main())
