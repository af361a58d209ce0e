"""Loaded by Python at start-up when this folder is on PYTHONPATH (tests that measure a child's memory):
at exit, print the process's peak resident memory as edge_runtime.cli.benchmarking.child_peak_rss reads it.

The child itself runs a real entry point (`python -m edge_runtime predict ...`) unchanged; VmHWM is read
from inside it because the kernel carries ru_maxrss across exec from the (large) parent that forked it.
"""

import atexit


def print_peak_rss():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                print("first-prediction", int(line.split()[1]), flush=True)


atexit.register(print_peak_rss)
