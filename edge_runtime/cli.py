"""`python -m edge_runtime` (or `mnist-edge`): predict, eval, bench and info on the device.

Every failure a user can cause (a missing or tampered file, an image that is not one) ends in one
line on stderr naming the thing and the problem, and exit status 1 — never a traceback.
"""

import argparse
import json
import pathlib
import sys
import tempfile

from edge_runtime import backends, errors, manifest

DEFAULT_BUNDLE_MODELS = ("model_int8.tflite", "model_int8.onnx")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".pnm", ".npy"}
EXIT_FAILED_CHECK = 3


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m edge_runtime", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def model_options(command):
        command.add_argument("--backend", choices=backends.BACKEND_NAMES, default=None,
                             help="force an interpreter (default: the first installed for the format)")
        command.add_argument("--threads", type=int, default=None, help="interpreter threads")
        command.add_argument("--skip-integrity-check", action="store_true",
                             help="load a model even when its sha256 differs from the manifest (unsafe)")
        command.add_argument("--json", action="store_true", help="print JSON instead of a table")

    predict = commands.add_parser("predict", help="classify digit images (PNG, JPEG, PGM, .npy)")
    predict.add_argument("model", type=pathlib.Path)
    predict.add_argument("images", nargs="+", help="image files, directories of them, or - for stdin")
    predict.add_argument("--top-k", type=int, default=3)
    model_options(predict)

    evaluate = commands.add_parser("eval", help="accuracy on the bundled test set against the float model")
    evaluate.add_argument("target", type=pathlib.Path, help="a bundle directory or one model file in it")
    evaluate.add_argument("--test-set", type=pathlib.Path, default=None,
                          help="test set .npz (default: mnist_test.npz beside the model)")
    evaluate.add_argument("--tolerance", type=float, default=0.5,
                          help="largest accepted accuracy drop against the float model, in points")
    evaluate.add_argument("--strict", action="store_true",
                          help="also fail when the accuracy differs from the one recorded at export")
    evaluate.add_argument("--save-outputs", type=pathlib.Path, default=None,
                          help="directory to save each model's raw outputs (.npy) for bit-exact comparison")
    model_options(evaluate)

    bench = commands.add_parser("bench", help="latency, throughput, cold start and peak memory")
    bench.add_argument("model", type=pathlib.Path)
    bench.add_argument("--batch-size", type=int, default=256)
    bench.add_argument("--runs", type=int, default=200, help="timed single-image predictions")
    bench.add_argument("--test-set", type=pathlib.Path, default=None)
    model_options(bench)
    bench.set_defaults(threads=1)

    info = commands.add_parser("info", help="the manifest entry and input/output details of a model")
    info.add_argument("model", type=pathlib.Path)
    model_options(info)
    return parser


def main(argv=None):
    arguments = build_parser().parse_args(argv)
    handlers = {"predict": run_predict, "eval": run_eval, "bench": run_bench, "info": run_info}
    try:
        return handlers[arguments.command](arguments)
    except errors.EdgeRuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def load_classifier(arguments, path):
    from edge_runtime.classifier import Classifier

    return Classifier.load(path, backend=arguments.backend, threads=arguments.threads,
                           check_integrity=not arguments.skip_integrity_check)


def expand_image_arguments(items):
    """Turn file, directory and '-' arguments into (label, path) pairs; stdin is saved to a temp file."""
    found_paths = []
    for item in items:
        if item == "-":
            found_paths.append(("<stdin>", stdin_to_file(sys.stdin.buffer.read())))
            continue
        path = pathlib.Path(item)
        if path.is_dir():
            found = sorted(child for child in path.iterdir() if child.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise errors.InputError(f"{path}: directory holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
            found_paths.extend((str(child), child) for child in found)
        else:
            found_paths.append((str(path), path))
    return found_paths


def stdin_to_file(data):
    """Save image bytes read from stdin under a name whose suffix matches their format."""
    if not data:
        raise errors.InputError("<stdin>: no data (empty input), not an image")
    signatures = ((b"\x89PNG", ".png"), (b"\xff\xd8", ".jpg"), (b"\x93NUMPY", ".npy"), (b"P5", ".pgm"),
                  (b"P2", ".pgm"), (b"BM", ".bmp"), (b"GIF8", ".gif"))
    suffix = next((suffix for magic, suffix in signatures if data.startswith(magic)), ".png")
    handle = tempfile.NamedTemporaryFile(prefix="mnist-edge-stdin-", suffix=suffix, delete=False)
    with handle:
        handle.write(data)
    return pathlib.Path(handle.name)


def load_image_arguments(items):
    """Read every image named on the command line; returns (images, names). Temp files are removed."""
    from edge_runtime import images

    pairs = expand_image_arguments(items)
    try:
        return images.load_images([path for _, path in pairs], names=[label for label, _ in pairs])
    finally:
        for label, path in pairs:
            if label == "<stdin>":
                path.unlink(missing_ok=True)


def run_predict(arguments):
    if arguments.top_k < 1:
        raise errors.InputError(f"--top-k must be at least 1, got {arguments.top_k}")
    model = load_classifier(arguments, arguments.model)
    batch, names = load_image_arguments(arguments.images)
    predictions = model.predict(batch, name=names[0] if len(names) == 1 else "images")
    top_labels, top_probabilities = predictions.top_k(min(arguments.top_k, predictions.probabilities.shape[1]))
    results = [
        {
            "file": name,
            "label": int(labels[0]),
            "probability": float(probabilities[0]),
            "top_k": [{"label": int(label), "probability": float(probability)}
                      for label, probability in zip(labels, probabilities)],
        }
        for name, labels, probabilities in zip(names, top_labels, top_probabilities)
    ]
    if arguments.json:
        print(json.dumps({"model": str(arguments.model), "backend": model.backend.name, "predictions": results}, indent=2))
        return 0
    width = max(len(result["file"]) for result in results)
    for result in results:
        alternatives = "  ".join(f"{entry['label']}:{entry['probability']:.3f}" for entry in result["top_k"][1:])
        print(f"{result['file']:<{width}}  {result['label']}  ({result['probability']:.3f})  {alternatives}")
    return 0


def models_to_evaluate(target):
    """Return (bundle directory, model paths) for a bundle directory or a single model file."""
    if target.is_dir():
        candidates = [target / name for name in DEFAULT_BUNDLE_MODELS if (target / name).is_file()]
        if not candidates:
            raise errors.ModelFileError(f"{target}: no {' or '.join(DEFAULT_BUNDLE_MODELS)} in this directory")
        installed = set(backends.available_backends())
        runnable = [path for path in candidates
                    if installed & set(backends.TFLITE_INTERPRETERS if path.suffix == ".tflite" else backends.ONNX_RUNTIMES)]
        for skipped in sorted(set(candidates) - set(runnable)):
            print(f"note: skipping {skipped.name}: no interpreter for it is installed", file=sys.stderr)
        if not runnable:
            raise errors.BackendUnavailableError(f"{target}: no installed interpreter runs its models; 'pip install mnist-edge[edge]'")
        return target, runnable
    return target.parent, [target]


class Progress:
    """A one-line counter on stderr when it is a terminal; silent in logs and pipes."""

    def __init__(self, label, total):
        self.label, self.total = label, total
        self.enabled = sys.stderr.isatty()

    def __call__(self, done):
        if self.enabled:
            end = "\n" if done >= self.total else ""
            print(f"\r{self.label}: {done}/{self.total} images", end=end, file=sys.stderr, flush=True)


def run_eval(arguments):
    from edge_runtime import evaluation

    directory, model_paths = models_to_evaluate(arguments.target)
    images, labels = evaluation.load_test_set(arguments.test_set or directory / evaluation.TEST_SET_NAME)
    float_labels = None
    float_model = directory / evaluation.FLOAT_REFERENCE_NAME
    can_run_float_tflite = (set(backends.TFLITE_INTERPRETERS) - set(backends.INT8_ONLY_BACKENDS)) & set(backends.available_backends())
    if float_model.is_file() and float_model not in model_paths and not can_run_float_tflite:
        print(f"note: no agreement with {float_model.name}: no installed interpreter runs float models", file=sys.stderr)
    if float_model.is_file() and float_model not in model_paths and can_run_float_tflite:
        reference = evaluation.evaluate(float_model, images, labels, threads=arguments.threads,
                                        check_integrity=not arguments.skip_integrity_check,
                                        progress=Progress(float_model.name, len(labels)))
        float_labels = reference.labels
    results = []
    for path in model_paths:
        results.append(evaluation.evaluate(
            path, images, labels, backend=arguments.backend, threads=arguments.threads,
            check_integrity=not arguments.skip_integrity_check, float_labels=float_labels,
            progress=Progress(path.name, len(labels)),
        ))
    if arguments.save_outputs:
        import numpy as np

        arguments.save_outputs.mkdir(parents=True, exist_ok=True)
        for result in results:
            np.save(arguments.save_outputs / f"{result.model}.{result.backend}.npy", result.raw_outputs)
    failures = eval_failures(results, arguments.tolerance, arguments.strict)
    if arguments.json:
        print(json.dumps({"tolerance_points": arguments.tolerance, "results": [r.as_dict() for r in results],
                          "passed": not failures}, indent=2))
    else:
        print_eval_table(results, arguments.tolerance)
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return EXIT_FAILED_CHECK if failures else 0


def eval_failures(results, tolerance, strict):
    """Return one message per model that fails the accuracy check."""
    failures = []
    for result in results:
        if result.drop_points is None:
            failures.append(f"{result.model}: no float accuracy to compare with (no manifest beside it)")
        elif result.drop_points > tolerance:
            failures.append(f"{result.model}: accuracy {100 * result.accuracy:.2f}% is {result.drop_points:.2f} points "
                            f"below the float model's {100 * result.float_accuracy:.2f}% (tolerance {tolerance:.2f})")
        if strict and result.matches_export is False:
            failures.append(f"{result.model}: accuracy {100 * result.accuracy:.2f}% differs from the "
                            f"{100 * result.export_accuracy:.2f}% measured at export")
    return failures


def print_eval_table(results, tolerance):
    def percent(value):
        return "-" if value is None else f"{100 * value:.2f}%"

    header = ("model", "backend", "images", "accuracy", "float", "change", "agreement", "as exported", "check")
    rows = [header]
    for result in results:
        passed = result.drop_points is not None and result.drop_points <= tolerance
        rows.append((
            result.model, result.backend, str(result.images), percent(result.accuracy), percent(result.float_accuracy),
            "-" if result.drop_points is None else f"{0.0 - result.drop_points:+.2f} pt",
            percent(result.agreement_with_float),
            {True: "yes", False: "NO", None: "-"}[result.matches_export],
            "pass" if passed else "FAIL",
        ))
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print(f"(change: accuracy against the float Keras model in percentage points; tolerance {tolerance:.2f})")


def run_bench(arguments):
    import numpy as np

    from edge_runtime import benchmarking, evaluation

    model = load_classifier(arguments, arguments.model)
    test_set = arguments.test_set or arguments.model.with_name(evaluation.TEST_SET_NAME)
    if test_set.is_file():
        images = evaluation.load_test_set(test_set)[0][:2048]
    else:
        # Without a test set the figures are the same: this model's cost does not depend on pixels.
        images = np.random.default_rng(0).integers(0, 256, (2048, 28, 28), dtype=np.uint8)
    result = benchmarking.run_benchmark(model, images, batch_size=arguments.batch_size, runs=arguments.runs)
    result["threads"] = arguments.threads
    if arguments.json:
        print(json.dumps(result, indent=2))
        return 0
    latency = result["latency_batch1_ms"]
    print(benchmarking.format_table([
        ("model", f"{arguments.model} ({result['backend']}, {arguments.threads} thread(s))"),
        ("latency, batch 1", f"p50 {latency['p50']:.3f} ms  p90 {latency['p90']:.3f} ms  p99 {latency['p99']:.3f} ms"),
        (f"throughput, batch {arguments.batch_size}", f"{result['throughput_images_per_s']:,.0f} images/s"),
        ("cold start", f"{result['cold_start_s']:.3f} s (process start to first prediction)"),
        ("peak RSS", f"{result['peak_rss_mib']:.1f} MiB"),
    ]))
    return 0


def run_info(arguments):
    model = load_classifier(arguments, arguments.model)
    beside = manifest.manifest_beside(arguments.model)
    document = {
        **model.describe(),
        "manifest_entry": None if beside is None else beside["files"].get(arguments.model.name),
        "preprocessing": None if beside is None else beside.get("preprocessing"),
        "float_accuracy": None if beside is None else beside.get("source_model", {}).get("test_accuracy"),
    }
    if arguments.json:
        print(json.dumps(document, indent=2))
        return 0
    for key in ("path", "format", "backend"):
        print(f"{key:<14} {document[key]}")
    for key in ("input", "output"):
        tensor = document[key]
        quantization = tensor["quantization"]
        quantized = "" if quantization is None else f"  scale {quantization['scale']:.6g} zero point {quantization['zero_point']}"
        print(f"{key:<14} {tensor['name']} {tensor['dtype']} {tensor['shape']}{quantized}")
    entry = document["manifest_entry"]
    if entry:
        print(f"{'sha256':<14} {entry['sha256']} (verified)" if not arguments.skip_integrity_check else entry["sha256"])
        print(f"{'size':<14} {entry['bytes']:,} bytes")
        print(f"{'accuracy':<14} {100 * entry['test_accuracy']:.2f}% at export "
              f"(float model {100 * document['float_accuracy']:.2f}%)")
    else:
        print("manifest       none beside this model")
    return 0
