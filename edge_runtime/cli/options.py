"""The command line's options: argparse, loaded only when a command line needs it.

`mnist-edge predict MODEL IMAGE...` with no option, what a device runs most, is read by
`edge_runtime.cli.main` without it: argparse's import and parser building cost a few ms of a start of
about 100 ms. Every other command line comes here. The defaults both read live in cli/defaults.py.
"""

import argparse
import math
import os
import pathlib
import sys

from edge_runtime import backends, errors
from edge_runtime.cli import defaults


def checked(convert, accepts, meaning):
    """An argparse `type`: `convert` the text (int or float), refused unless `accepts(value)`; both
    refusals say `must be {meaning}` and what was given."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {meaning}, got {text!r}") from None
        if not accepts(value):
            raise argparse.ArgumentTypeError(f"must be {meaning}, got {value!r}")
        return value

    return parse


positive_integer = checked(int, lambda value: value >= 1, "a positive integer")
points = checked(float, lambda value: math.isfinite(value) and value >= 0, "a finite number of percentage points >= 0")
fraction = checked(float, lambda value: 0.0 < value < 1.0, "a number between 0 and 1 (both excluded)")


class Formatter(argparse.HelpFormatter):
    """argparse's help layout, sized without importing shutil (which argparse would do on every start)."""

    def __init__(self, prog, **options):
        if options.get("width") is None:
            options["width"] = terminal_columns() - 2
        super().__init__(prog, **options)


def terminal_columns():
    try:
        return int(os.environ.get("COLUMNS", ""))
    except ValueError:
        pass
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns
    except (OSError, ValueError):
        return 80


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad option is one line on stderr (no usage block), exit status 2."""

    def __init__(self, *arguments, **options):
        options.setdefault("formatter_class", Formatter)
        super().__init__(*arguments, **options)

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {errors.one_line(message)}\n")


def model_options(command):
    command.add_argument("--backend", choices=backends.BACKEND_NAMES, default=None,
                         help="force an interpreter (default: the first installed for the format)")
    command.add_argument("--threads", type=positive_integer, default=None, help="interpreter threads")
    command.add_argument("--skip-integrity-check", action="store_true",
                         help="load a model even when its sha256 differs from the manifest (unsafe)")
    command.add_argument("--json", action="store_true", help="print JSON instead of a table")


def predict_options(predict):
    predict.add_argument("model", type=pathlib.Path)
    predict.add_argument("images", nargs="+", help="image files, directories of them, or - for stdin")
    predict.add_argument("--top-k", type=positive_integer)
    model_options(predict)

    predict.set_defaults(**defaults.PREDICT_DEFAULTS)


def eval_options(evaluate):
    evaluate.add_argument("target", type=pathlib.Path, help="a bundle directory or one model file in it")
    evaluate.add_argument("--test-set", type=pathlib.Path, default=None,
                          help="test set .npz (default: the manifest's test set, beside the model)")
    evaluate.add_argument("--tolerance", type=points, default=None,
                          help="largest accepted accuracy drop against the float model, in points "
                               "(default: the manifest's)")
    evaluate.add_argument("--strict", action="store_true",
                          help="also fail when the accuracy differs from the one recorded at export")
    evaluate.add_argument("--allow-missing", action="store_true",
                          help="skip models and the float reference the manifest lists but the directory lacks")
    evaluate.add_argument("--save-outputs", type=pathlib.Path, default=None,
                          help="directory to save each model's raw outputs (.npy) for bit-exact comparison")
    model_options(evaluate)


def bench_options(bench):
    bench.add_argument("model", type=pathlib.Path)
    bench.add_argument("--batch-size", type=positive_integer, default=256)
    bench.add_argument("--runs", type=positive_integer, default=200, help="timed single-image predictions")
    bench.add_argument("--test-set", type=pathlib.Path, default=None)
    model_options(bench)
    bench.set_defaults(threads=1)


def info_options(info):
    info.add_argument("model", type=pathlib.Path)
    model_options(info)


def samples_options(samples):
    samples.add_argument("folder", type=pathlib.Path, help="the folder serve --collect wrote")
    samples.add_argument("--out", type=pathlib.Path, default=None,
                         help="write them as a Keras-layout .npz (x_train, y_train, x_test, y_test) for "
                              "'make train export EXTRA_DATA=...' and 'make compare EXTRA_DATA=...'")
    samples.add_argument("--test-fraction", type=fraction, default=None,
                         help="share of the samples held out as the second test set, chosen by id hash "
                              "(default 0.25)")
    samples.add_argument("--json", action="store_true", help="print JSON instead of lines")


def serve_options(serve):
    # serve parses its own options (edge_runtime/serve/server.py), so nothing of it loads unless it runs.
    serve.add_argument("serve_arguments", nargs=argparse.REMAINDER)


def root_option(command):
    from edge_runtime.install import store

    command.add_argument("--root", type=pathlib.Path, default=store.DEFAULT_ROOT,
                         help=f"where versions are installed (default {store.DEFAULT_ROOT})")


def restart_options(command):
    command.add_argument("--restart-command", default=None,
                         help="command that restarts the service (default: systemctl restart UNIT where systemd runs)")
    command.add_argument("--service-unit", default="mnist-edge.service", help="the systemd unit (default mnist-edge.service)")


def install_options(install):
    install.add_argument("bundle", type=pathlib.Path, help="the bundle tarball (its signature beside it, BUNDLE.sig)")
    root_option(install)
    install.add_argument("--keep", type=positive_integer, default=3, help="versions kept (default 3)")
    install.add_argument("--trusted-keys", type=pathlib.Path, default=None,
                         help="public keys trusted to sign bundles, one OpenSSH line each (default ROOT/trusted-keys)")
    install.add_argument("--allow-unsigned", action="store_true",
                         help="install without checking the signature (development only; logged)")
    restart_options(install)
    install.add_argument("--service-url", default="http://127.0.0.1:8080",
                         help="where the service answers, for probation (default http://127.0.0.1:8080)")
    install.add_argument("--probation-seconds", type=checked(float, lambda value: math.isfinite(value) and value >= 0,
                                                             "a number of seconds >= 0"), default=600.0,
                         help="how long the new version must prove itself on live traffic (default 600; 0: no probation)")
    install.add_argument("--token-file", type=pathlib.Path, default=None,
                         help="the service's token, when it was started with --token-file")
    recipe = install.add_argument_group("the version's Python environment (a venv per version)")
    recipe.add_argument("--python", default=sys.executable,
                        help="the Python that creates the venv (default: the one running this command)")
    recipe.add_argument("--system-site-packages", action="store_true",
                        help="let the venv see Debian's numpy and Pillow (32-bit and ARMv6 Pi OS)")
    recipe.add_argument("--extras", default="edge,serve",
                        help="the wheel's extras to install (default edge,serve; '' for none)")
    recipe.add_argument("--no-deps", action="store_true",
                        help="install the wheel alone: its dependencies are already visible to the venv")
    recipe.add_argument("--pip-option", action="append", default=[], dest="pip_options",
                        help="an option for pip (repeat it), e.g. --pip-option=--index-url=URL")


def status_options(status):
    root_option(status)
    status.add_argument("--json", action="store_true", help="print JSON instead of lines")


def rollback_options(rollback):
    root_option(rollback)
    restart_options(rollback)


# name: (help line, what adds its arguments, extra add_parser options)
COMMANDS = {
    "predict": ("classify images (PNG, JPEG, PGM, .npy)", predict_options, {}),
    "eval": ("accuracy on the bundled test set against the float model", eval_options, {}),
    "bench": ("latency, throughput, cold start and peak memory", bench_options, {}),
    "info": ("the manifest entry and input/output details of a model", info_options, {}),
    "samples": ("labelled samples collected by serve --collect, as training data", samples_options, {}),
    "serve": ("the model as an HTTP service: API, page, metrics (needs [serve]; serve --help)", serve_options,
              {"add_help": False, "prefix_chars": "\0"}),
    "install": ("install a signed bundle: gate, switch, probation, rollback (needs [install])", install_options, {}),
    "status": ("the installed versions, the current one, the last install's outcome", status_options, {}),
    "rollback": ("switch back to the previous installed version and restart the service", rollback_options, {}),
}


def build_parser(command=None):
    """The command line's parser: every command, or only `command`, the one about to run (building
    all of them costs a few ms of every start, and a known command never needs the others)."""
    parser = OneLineParser(prog="mnist-edge", description=defaults.DESCRIPTION)
    # An explicit prog spares argparse a help formatter now, and with it the import of shutil
    # (and of bz2 and lzma through it): a few ms and an MiB of every command's start.
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser, prog="mnist-edge")
    for name, (help_line, add_options, options) in COMMANDS.items():
        if command is None or command == name:
            add_options(commands.add_parser(name, help=help_line, **options))
    return parser
