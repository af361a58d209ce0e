"""Running a workstation stage (train, export) as a command: one line per failure, 130 on Ctrl-C."""

import os
import signal
import sys


def run(stage, expected_errors):
    """Call `stage()`; return the exit status: 0, or 1 with one line for an `expected_errors` failure
    or an OSError (a full disk, a directory that vanished). When interrupted, say so in one line and
    end the process with status 130.

    Ctrl-C is remembered when it arrives: a library that turns the KeyboardInterrupt into an error
    of its own (a file being written when it came, say) still ends as an interruption, not as a
    misleading message about that file.
    """
    interrupted = []

    def on_interrupt(signal_number, frame):
        interrupted.append(signal_number)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        stage()
        return 0
    except KeyboardInterrupt:
        interrupted.append(signal.SIGINT)
    except expected_errors as error:
        if not interrupted:
            print(f"error: {error}", file=sys.stderr)
            return 1
    except OSError as error:
        if not interrupted:
            print(f"error: {error.filename or 'output'}: {error.strerror or error}", file=sys.stderr)
            return 1
    finally:
        signal.signal(signal.SIGINT, previous)
    print("error: interrupted", file=sys.stderr)
    # Straight out: every file was closed or removed while the interruption unwound, and TensorFlow
    # interrupted mid-graph can crash in its own teardown at exit, which would hide this status.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)
