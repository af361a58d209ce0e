"""`predict`'s own path from one image file to its answer, in a fresh process, then its peak memory.

    python benchmarks/predict_peak_rss.py MODEL IMAGE

Prints predict's line, then `first-prediction <peak RSS in KiB>` (as edge_runtime.cli.cold_start does),
so that bench_serve.py can set the idle server's memory beside it.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from edge_runtime.cli import cold_start, main as cli  # noqa: E402


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python benchmarks/predict_peak_rss.py MODEL IMAGE", file=sys.stderr)
        return 2
    status = cli.main(["predict", *argv])
    cold_start.report_peak_rss()
    return status


if __name__ == "__main__":
    sys.exit(main())
