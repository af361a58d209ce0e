"""`python -m edge_runtime.cli.platform_report`: what this device's Python offers the runtime, one fact a line.

For checking an install (pi/check.py reads it on every emulated Pi): the machine, Python, where numpy
comes from (Debian's python3-numpy or pip), Pillow, the interpreters found and the arithmetic the
numpy engine picks here. Prints lines `platform-KEY VALUE`; nothing missing is an error.
"""

import platform
import sys


def facts():
    """Return [(key, value)] describing this Python and the runtime's options on it."""
    import numpy

    from edge_runtime import backends
    from edge_runtime.engine import interpreter as numpy_engine

    found = [("machine", platform.machine()), ("python", platform.python_version()),
             ("numpy", numpy.__version__), ("numpy-path", numpy.__file__)]
    try:
        import PIL

        found.append(("pillow", PIL.__version__))
    except ImportError:
        found.append(("pillow", "none"))
    found.append(("backends", ",".join(backends.available_backends())))
    found.append(("soft-float", str(numpy_engine.soft_float_abi()).lower()))
    found.append(("numpy-engine-arithmetic", numpy_engine.choose_arithmetic()))
    return found


def main():
    for key, value in facts():
        print(f"platform-{key} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
