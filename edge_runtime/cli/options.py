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
non_negative_integer = checked(int, lambda value: value >= 0, "a whole number, 0 or more")
points = checked(float, lambda value: math.isfinite(value) and value >= 0, "a finite number of percentage points >= 0")
fraction = checked(float, lambda value: 0.0 < value < 1.0, "a number between 0 and 1 (both excluded)")
share = checked(float, lambda value: 0.0 <= value <= 1.0, "a number from 0 to 1")
percentage = checked(float, lambda value: 0.0 <= value <= 100.0, "a percentage from 0 to 100")
port = checked(int, lambda value: 0 <= value <= 65535, "a TCP port number 0..65535")
positive_seconds = checked(float, lambda value: math.isfinite(value) and value > 0, "a positive number of seconds")
non_negative_seconds = checked(float, lambda value: math.isfinite(value) and value >= 0,
                               "a number of seconds, 0 or more")


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
                         help="force an interpreter (default: the first installed one that runs the model)")
    threads = command.get_default("threads")
    command.add_argument("--threads", type=positive_integer, default=threads,
                         help=f"interpreter threads (default: {threads or 'the interpreter decides'})")
    command.add_argument("--skip-integrity-check", action="store_true",
                         help="load a model even when its sha256 differs from the manifest (unsafe)")
    command.add_argument("--json", action="store_true", help="print JSON instead of a table")


MODEL_HELP = "a bundle directory (its int8 model, as its manifest says) or a model file (.tflite, .onnx)"


def predict_options(predict):
    predict.set_defaults(**defaults.PREDICT_DEFAULTS)
    # A str, as main.parse_arguments gives it without argparse: predict's start never imports pathlib.
    predict.add_argument("model", help=MODEL_HELP)
    predict.add_argument("images", nargs="+", help="image files, directories of them, or - for stdin")
    predict.add_argument("--top-k", type=positive_integer,
                         help="the best classes to list for each image (default: %(default)s; more than the "
                              "model's classes lists them all)")
    model_options(predict)


def eval_options(evaluate):
    evaluate.add_argument("target", type=pathlib.Path, help="a bundle directory (every int8 model its manifest lists) "
                                                             "or one model file in it")
    evaluate.add_argument("--test-set", type=pathlib.Path, default=None,
                          help="test set .npz (default: the manifest's test set, beside the model)")
    evaluate.add_argument("--images", type=positive_integer, default=None,
                          help="evaluate the first N test images only (default: all), judged against the float "
                               "reference run here on the same images, as serve --self-check-images")
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
    bench.set_defaults(threads=1)
    bench.add_argument("model", type=pathlib.Path, help=MODEL_HELP)
    bench.add_argument("--batch-size", type=positive_integer, default=256,
                       help="images per call for the throughput figure (default: %(default)s)")
    bench.add_argument("--runs", type=positive_integer, default=200,
                       help="timed single-image predictions (default: %(default)s)")
    bench.add_argument("--test-set", type=pathlib.Path, default=None,
                       help="images to time on (default: the manifest's test set; random pixels without one)")
    model_options(bench)


def info_options(info):
    info.add_argument("model", type=pathlib.Path, help=MODEL_HELP)
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
    """serve's flags, one to one onto edge_runtime.serve.server.ServeConfig (its defaults are read from there)."""
    from edge_runtime.serve.server import ServeConfig as config

    serve.add_argument("target", type=pathlib.Path,
                       help="the unpacked bundle directory (its int8 model, as its manifest says), or a model file in it")
    serve.add_argument("--host", default=config.host,
                       help="address to listen on (default %(default)s: this machine only; 0.0.0.0 for the network)")
    serve.add_argument("--port", type=port, default=config.port,
                       help="TCP port (default: %(default)s; 0: any free port, printed at start)")
    serve.add_argument("--backend", choices=backends.BACKEND_NAMES, default=None,
                       help="force an interpreter (default: the first installed one that runs the model)")
    serve.add_argument("--threads", type=positive_integer, default=config.threads,
                       help="interpreter threads (default: %(default)s)")
    serve.add_argument("--workers", type=positive_integer, default=config.workers,
                       help="request worker threads (default: %(default)s); more requests wait in a queue")
    serve.add_argument("--token-file", type=pathlib.Path, default=None,
                       help="file holding a token every API call must present as 'Authorization: Bearer <token>'")
    serve.add_argument("--probes-need-token", action="store_true",
                       help="also require the token on /healthz, /readyz and /metrics (open by default)")
    serve.add_argument("--max-body-bytes", type=positive_integer, default=config.max_body_bytes,
                       help="largest request body accepted (default: %(default)s); larger ones get 413 unread")
    serve.add_argument("--self-check-images", type=non_negative_integer, default=None,
                       help="check on the first N test images only (default: all; 0 skips the check, /readyz stays 503)")
    serve.add_argument("--tolerance", type=points, default=None,
                       help="largest accepted accuracy drop against the float model, in points "
                            "(default: the manifest's, as eval)")
    serve.add_argument("--allow-failed-self-check", action="store_true",
                       help="serve even when the self-check fails (/readyz answers 503)")
    serve.add_argument("--no-access-log", dest="access_log", action="store_false",
                       help="write no line per request (by default each one is logged: method, path, status, "
                            "bytes, milliseconds, prediction id)")
    live = serve.add_argument_group("live checks against the bundle's float reference")
    live.add_argument("--shadow-rate", type=share, default=config.shadow_rate,
                      help="share of predicted images the float model also runs, 0..1 (default: %(default)s; on one "
                           "core it costs about what the int8 model does, a few percent of a request)")
    live.add_argument("--agreement-window", type=positive_integer, default=config.agreement_window,
                      help="shadowed images the threshold looks at (default: %(default)s)")
    live.add_argument("--min-agreement", type=percentage, default=config.min_agreement,
                      help="warn when int8-float agreement over the window falls below this percentage "
                           "(default: %(default)s)")
    live.add_argument("--unready-below-agreement", action="store_true",
                      help="also answer 503 on /readyz while the agreement is below --min-agreement")
    live.add_argument("--feedback-ids", type=positive_integer, default=config.feedback_ids,
                      help="predictions kept for feedback, newest (default: %(default)s)")
    live.add_argument("--feedback-seconds", type=positive_seconds, default=config.feedback_seconds,
                      help="how long a prediction can be labelled (default: %(default)s)")
    live.add_argument("--collect", type=pathlib.Path, default=None,
                      help="keep every labelled input in this folder (off by default: nothing a user sends is "
                           "written without it); 'mnist-edge samples DIR --out samples.npz' turns it into training data")
    live.add_argument("--collect-max-samples", type=positive_integer, default=config.collect_max_samples,
                      help="samples kept, oldest out first (default: %(default)s)")
    live.add_argument("--collect-max-bytes", type=positive_integer, default=config.collect_max_bytes,
                      help="bytes kept, oldest out first (default: %(default)s)")
    drift = serve.add_argument_group("label-free drift against the test set's top-1 probability histogram")
    drift.add_argument("--drift-window", type=positive_integer, default=config.drift_window,
                       help="latest predicted images the drift distance looks at (default: %(default)s)")
    drift.add_argument("--drift-threshold", type=share, default=config.drift_threshold,
                       help="warn when the total variation distance to the test set's histogram is above this, "
                            "0..1 (default: %(default)s; docs/fleet.md says why)")
    drift.add_argument("--drift-min-images", type=positive_integer, default=config.drift_min_images,
                       help="images the window must hold before the threshold applies (default: %(default)s; "
                            "at most --drift-window)")
    serve.add_argument("--stop-seconds", type=non_negative_seconds, default=config.stop_seconds,
                       help="on SIGTERM or Ctrl-C, time to finish the requests already accepted before those "
                            "not started get 503 (default: %(default)s); a second signal stops at once")


def check_together(parser, arguments):
    """The checks no single option's type can make, one line and exit 2 through `parser` as theirs."""
    if arguments.command == "serve" and arguments.drift_min_images > arguments.drift_window:
        parser.error(f"--drift-min-images ({arguments.drift_min_images}) cannot be more than "
                     f"--drift-window ({arguments.drift_window})")


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
    install.add_argument("--require-agreement", action="store_true",
                         help="fail probation unless serve's int8-float agreement window filled and held "
                              "(by default a quiet service, or one with no float reference, passes on readiness)")
    install.add_argument("--gate-images", type=positive_integer, default=None,
                         help="the gate's eval on the first N test images only (default: all; eval --images N)")
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
    "serve": ("the model as an HTTP service: API, page, metrics (needs [serve])", serve_options, {}),
    "install": ("install a signed bundle: gate, switch, probation, rollback (needs [install])", install_options, {}),
    "status": ("the installed versions, the current one, the last install's outcome", status_options, {}),
    "rollback": ("switch back to the previous installed version and restart the service", rollback_options, {}),
}


def build_parser(command=None):
    """The command line's parser: every command, or only `command`, the one about to run (building
    all of them costs a few ms of every start, and a known command never needs the others)."""
    from edge_runtime import __version__

    parser = OneLineParser(prog="mnist-edge", description=defaults.DESCRIPTION,
                           epilog="'mnist-edge COMMAND --help' describes a command's options.")
    parser.add_argument("--version", action="version", version=f"mnist-edge {__version__}")
    # An explicit prog spares argparse a help formatter now, and with it the import of shutil
    # (and of bz2 and lzma through it): a few ms and an MiB of every command's start.
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser, prog="mnist-edge",
                                     title="commands", metavar="COMMAND")
    for name, (help_line, add_options, options) in COMMANDS.items():
        if command is None or command == name:
            add_options(commands.add_parser(name, help=help_line, description=help_line, **options))
    return parser
