"""Running a workstation stage (train, export) as a command: one line per failure, 130 on Ctrl-C.

Ctrl-C is taken at safe points. TensorFlow's converters call back into Python from C++, and a
KeyboardInterrupt raised inside such a callback can crash the process. So the first Ctrl-C is
noted, and the stage stops at its next `stop_if_interrupted()` (between files, between training
batches: a few seconds at most); a second Ctrl-C stops it at once.
"""

import os
import signal
import sys

from edge_runtime import errors

_interrupted = []


def stop_if_interrupted():
    """Raise KeyboardInterrupt when Ctrl-C has been pressed since the stage began."""
    if _interrupted:
        raise KeyboardInterrupt


def run(stage, expected_errors):
    """Call `stage()`; return the exit status: 0, or 1 with one line for an `expected_errors` failure
    or an OSError (a full disk, a directory that vanished). When interrupted, say so in one line and
    end the process with status 130.
    """
    def on_interrupt(signal_number, frame):
        _interrupted.append(signal_number)
        if len(_interrupted) > 1:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        stage()
    except KeyboardInterrupt:
        _interrupted.append(signal.SIGINT)
    except expected_errors as error:
        if not _interrupted:
            print(f"error: {errors.one_line(error)}", file=sys.stderr)
            return 1
    except OSError as error:
        if not _interrupted:
            print(f"error: {errors.one_line(error.filename or 'output')}: {error.strerror or error}", file=sys.stderr)
            return 1
    else:
        # Finished, whole (a Ctrl-C after the last safe point changed nothing). The process only exits
        # from here on, TensorFlow's teardown included: a Ctrl-C now would end it with a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return 0
    signal.signal(signal.SIGINT, previous)
    print("error: interrupted", file=sys.stderr)
    # Straight out: every file was closed or removed while the interruption unwound, and TensorFlow
    # interrupted mid-graph can crash in its own teardown at exit, which would hide this status.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)
