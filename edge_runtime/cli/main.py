"""`python -m edge_runtime` (or `mnist-edge`): predict, eval, bench, info, samples and serve on the device.

Every failure a user can cause (a missing or tampered file, an image that is not one, a bad
option) ends in one line on stderr naming the thing and the problem, and a non-zero exit status:
1 for a bad file or input, 2 for a bad option, 3 for a failed accuracy check, 130 for Ctrl-C.
`install` adds 4 (rolled back after probation) and 75 (another install is running): see
edge_runtime/install/installer.py.
"""

import json
import os
import pathlib
import sys
import types

from edge_runtime import backends, errors, manifest as manifest_module
from edge_runtime.cli.defaults import PREDICT_DEFAULTS


def parse_arguments(argv):
    """The parsed command line: argparse's Namespace, or for `predict MODEL IMAGE...` with nothing
    that starts with "-" but "-" (stdin), the same fields without importing argparse."""
    if len(argv) >= 3 and argv[0] == "predict" and not any(item.startswith("-") and item != "-" for item in argv[1:]):
        return types.SimpleNamespace(command="predict", model=pathlib.Path(argv[1]), images=list(argv[2:]),
                                     **PREDICT_DEFAULTS)
    from edge_runtime.cli import options

    return options.build_parser(argv[0] if argv and argv[0] in options.COMMANDS else None).parse_args(argv)


def main(argv=None):
    arguments = parse_arguments(sys.argv[1:] if argv is None else list(argv))
    handlers = {"predict": run_predict, "eval": run_eval, "bench": run_bench, "info": run_info,
                "samples": run_samples, "serve": run_serve, "install": run_install, "status": run_status,
                "rollback": run_rollback}
    try:
        status = handlers[arguments.command](arguments)
        sys.stdout.flush()
        return status
    except errors.EdgeRuntimeError as error:
        print(f"error: {errors.one_line(error)}", file=sys.stderr)
        return errors.EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return errors.EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`predict … | head -1`): what it read was whole; say nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def load_classifier(arguments, path):
    from edge_runtime.classifier import Classifier

    model = Classifier.load(path, backend=arguments.backend, threads=arguments.threads,
                            check_integrity=not arguments.skip_integrity_check)
    if model.manifest is None:
        print(f"note: {path}: no {manifest_module.MANIFEST_NAME} beside it: integrity not checked, "
              "classes named by index", file=sys.stderr)
    return model


def image_sources(items):
    """Turn file, directory and '-' arguments into (name, path or bytes) pairs; stdin is read as bytes."""
    from edge_runtime.pictures import decoding

    sources = []
    for item in items:
        if item == "-":
            sources.append(("<stdin>", sys.stdin.buffer.read()))
            continue
        path = pathlib.Path(item)
        if path.is_dir():
            try:
                found = sorted(child for child in path.iterdir() if child.suffix.lower() in decoding.IMAGE_SUFFIXES)
            except OSError as error:
                raise errors.InputError(f"{path}: cannot list directory: {error.strerror or error}") from None
            if not found:
                raise errors.InputError(
                    f"{path}: directory holds no image files ({', '.join(sorted(decoding.IMAGE_SUFFIXES))})")
            sources.extend((str(child), child) for child in found)
        else:
            sources.append((str(path), path))
    return sources


def run_predict(arguments):
    from edge_runtime.pictures import preparation

    model = load_classifier(arguments, arguments.model)
    sources = image_sources(arguments.images)
    batch, names = preparation.prepare_files([source for _, source in sources], preparation.for_classifier(model),
                                             names=[name for name, _ in sources])
    predictions = model.predict(batch, name=names[0] if len(names) == 1 else "images")
    top_labels, top_probabilities = predictions.top_k(min(arguments.top_k, predictions.probabilities.shape[1]))
    classes = model.class_names
    results = [
        {
            "file": name,
            "label": int(labels[0]),
            "class": classes[labels[0]],
            "probability": float(probabilities[0]),
            "top_k": [{"label": int(label), "class": classes[label], "probability": float(probability)}
                      for label, probability in zip(labels, probabilities)],
        }
        for name, labels, probabilities in zip(names, top_labels, top_probabilities)
    ]
    if arguments.json:
        print(json.dumps({"model": str(arguments.model), "backend": model.backend.name,
                          "classes": list(classes), "predictions": results}, indent=2))
        return 0
    width = max(len(result["file"]) for result in results)
    for result in results:
        alternatives = "  ".join(f"{entry['class']}:{entry['probability']:.3f}" for entry in result["top_k"][1:])
        print(f"{result['file']:<{width}}  {result['class']} ({result['label']})  "
              f"{result['probability']:.3f}  {alternatives}".rstrip())
    return 0


class Bundle:
    """What `eval` works on: a directory with a manifest, the models to check, the reference, the test set."""

    def __init__(self, target, allow_missing):
        self.directory = target if target.is_dir() else target.parent
        self.manifest = manifest_module.read_manifest(self.directory / manifest_module.MANIFEST_NAME)
        self.notes, self.missing = [], []
        if target.is_dir():
            listed = [self.directory / name for name in self.manifest.files_with_role(manifest_module.ROLE_INT8_MODEL)]
        else:
            listed = [target]
        present = [path for path in listed if path.exists()]
        self.missing = [path for path in listed if not path.exists()]
        reference_name = self.manifest.file_with_role(manifest_module.ROLE_FLOAT_REFERENCE)
        self.reference = None if reference_name is None else self.directory / reference_name
        if self.reference is not None and not self.reference.exists():
            self.missing.append(self.reference)
            self.reference = None
        if self.missing and not allow_missing:
            names = ", ".join(path.name for path in self.missing)
            raise errors.ModelFileError(
                f"{self.directory}: {names} listed in the manifest but missing (--allow-missing skips them)")
        for path in self.missing:
            self.notes.append(f"note: skipping {path.name}: listed in the manifest but missing")
        installed = set(backends.available_backends())
        self.models = []
        for path in present:
            if installed & set(backends.interpreters_for(path)):
                self.models.append(path)
            else:
                self.notes.append(f"note: skipping {path.name}: no interpreter for it is installed")
        if not self.models:
            raise errors.BackendUnavailableError(
                f"{target}: no installed interpreter runs its models; 'pip install mnist-edge[edge]'")
        # The numpy engine runs int8 models only: a float reference needs a real interpreter.
        self.reference_backends = () if self.reference is None else tuple(
            name for name in backends.interpreters_for(self.reference)
            if name in installed and name not in backends.INT8_ONLY_BACKENDS)
        if self.reference is not None and not self.reference_backends:
            self.notes.append(f"note: no agreement with {self.reference.name}: no installed interpreter runs float models")
            self.reference = None


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

    bundle = Bundle(arguments.target, arguments.allow_missing)
    document = bundle.manifest
    tolerance = document.tolerance_points if arguments.tolerance is None else arguments.tolerance
    for note in bundle.notes:
        print(note, file=sys.stderr)
    if arguments.test_set is None:
        test_set_name = document.file_with_role(manifest_module.ROLE_TEST_SET)
        if test_set_name is None:
            raise errors.ModelFileError(f"{bundle.directory}: the manifest names no test set; give --test-set")
        images, labels = evaluation.load_test_set(bundle.directory / test_set_name, document.input_shape,
                                                  document.num_classes, manifest=document)
    else:
        images, labels = evaluation.load_test_set(arguments.test_set, document.input_shape, document.num_classes)
    float_labels, figure_failures = None, []
    if bundle.reference is not None and bundle.reference not in bundle.models:
        from edge_runtime.classifier import Classifier

        # The forced backend runs the reference too when it can (a like-for-like device check).
        forced = arguments.backend if arguments.backend in bundle.reference_backends else None
        reference_model = Classifier.load(bundle.reference, backend=forced or bundle.reference_backends[0],
                                          threads=arguments.threads,
                                          check_integrity=not arguments.skip_integrity_check)
        reference = evaluation.evaluate(reference_model, images, labels, document,
                                        progress=Progress(bundle.reference.name, len(labels)))
        float_labels = reference.labels
        if arguments.test_set is None:  # the manifest's own, verified test set: its figures must hold
            figure_failures = evaluation.reference_failures(document, reference)
    results = []
    for path in bundle.models:
        model = load_classifier(arguments, path)
        results.append(evaluation.evaluate(model, images, labels, document, float_labels=float_labels,
                                           progress=Progress(path.name, len(labels))))
    if arguments.save_outputs:
        save_outputs(arguments.save_outputs, results)
    failures = figure_failures + evaluation.failures(results, tolerance, arguments.strict)
    if arguments.json:
        from edge_runtime.cli import cold_start

        # The whole process's high-water mark: what a device needs to run this eval.
        print(json.dumps({"tolerance_points": tolerance, "classes": list(document.classes),
                          "results": [result.as_dict(document.classes) for result in results],
                          "passed": not failures, "peak_rss_mib": cold_start.peak_rss_kib() / 1024}, indent=2))
    else:
        print_eval_table(results, tolerance, document.classes)
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return errors.EXIT_FAILED_CHECK if failures else 0


def save_outputs(directory, results):
    """Write each result's raw outputs to DIRECTORY/<model>.<backend>.npy, each file whole or not at all."""
    import io

    import numpy as np

    from edge_runtime import atomic_files

    try:
        directory.mkdir(parents=True, exist_ok=True)
        for result in results:
            buffer = io.BytesIO()
            np.save(buffer, result.raw_outputs)
            atomic_files.write_bytes_atomically(directory / f"{result.model}.{result.backend}.npy", buffer.getvalue())
    except OSError as error:
        raise errors.InputError(f"{directory}: cannot save outputs: {error.strerror or error}") from None


def print_eval_table(results, tolerance, class_names):
    from edge_runtime import evaluation

    def percent(value):
        return "-" if value is None else f"{100 * value:.2f}%"

    header = ("model", "backend", "images", "accuracy", "float", "change", "agreement", "as exported", "check")
    rows = [header]
    for result in results:
        passed = result.float_accuracy is not None and evaluation.accuracy_drop_failure(
            result.model, result.accuracy, result.float_accuracy, tolerance) is None
        rows.append((
            result.model, result.backend, str(result.images), percent(result.accuracy), percent(result.float_accuracy),
            "-" if result.drop_points is None else f"{0.0 - result.drop_points:+.2f} pt",
            percent(result.agreement_with_float),
            {True: "yes", False: "NO", None: "-"}[result.matches_export],
            "pass" if passed else "FAIL",
        ))
    print_table(rows)
    print(f"(change: accuracy against the float model in percentage points; tolerance {tolerance:.2f})")
    print()
    class_rows = [("class", *(result.model for result in results))]
    for index, name in enumerate(class_names):
        class_rows.append((f"{name} ({index})", *(percent(result.per_class_accuracy[index]) for result in results)))
    print_table(class_rows)


def print_table(rows):
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def run_bench(arguments):
    import numpy as np

    from edge_runtime import evaluation
    from edge_runtime.cli import benchmarking

    model = load_classifier(arguments, arguments.model)
    test_set = arguments.test_set
    if test_set is None and model.manifest is not None:
        name = model.manifest.file_with_role(manifest_module.ROLE_TEST_SET)
        test_set = None if name is None else arguments.model.with_name(name)
    if test_set is not None and test_set.is_file():
        images = evaluation.load_test_set(test_set, model.input_shape)[0][:2048]
    else:
        # Without a test set the figures are the same: this model's cost does not depend on pixels.
        images = np.random.default_rng(0).integers(0, 256, (2048, *model.input_shape), dtype=np.uint8)
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
    from edge_runtime.pictures import preparation

    model = load_classifier(arguments, arguments.model)
    document = model.manifest
    entry = None if document is None else document.files.get(arguments.model.name)
    info = {
        **model.describe(),
        "manifest_entry": None if entry is None else entry.details,
        "preparation": preparation.for_classifier(model).name,
        "float_accuracy": None if document is None else document.float_accuracy,
    }
    if arguments.json:
        print(json.dumps(info, indent=2))
        return 0
    for key in ("path", "format", "backend", "preparation"):
        print(f"{key:<14} {info[key]}")
    for key in ("input", "output"):
        tensor = info[key]
        quantization = tensor["quantization"]
        quantized = "" if quantization is None else f"  scale {quantization['scale']:.6g} zero point {quantization['zero_point']}"
        print(f"{key:<14} {tensor['name']} {tensor['dtype']} {tensor['shape']}{quantized}")
    print(f"{'classes':<14} {', '.join(info['classes'])}")
    if entry is not None:
        print(f"{'sha256':<14} {entry.sha256}" + ("" if arguments.skip_integrity_check else " (verified)"))
        print(f"{'size':<14} {entry.bytes:,} bytes")
        print(f"{'accuracy':<14} {100 * entry.test_accuracy:.2f}% at export "
              f"(float model {100 * document.float_accuracy:.2f}%)")
    return 0


def run_samples(arguments):
    from edge_runtime import samples

    collected, problems = samples.read_folder(arguments.folder)
    for problem in problems:
        print(f"note: skipping {errors.one_line(problem)}", file=sys.stderr)
    counts = samples.summary(collected)
    written = None
    if arguments.out is not None:
        fraction = samples.DEFAULT_TEST_FRACTION if arguments.test_fraction is None else arguments.test_fraction
        train, test = samples.write_keras_npz(collected, arguments.out, fraction)
        written = {"path": str(arguments.out), "train": train, "test": test}
    if arguments.json:
        print(json.dumps({**counts, "unreadable": problems, "written": written}, indent=2))
        return 0
    float_part = (f", float model right on {counts['float_right']}/{counts['with_float']}" if counts["with_float"] else "")
    print(f"{arguments.folder}: {counts['samples']} labelled samples, int8 model right on "
          f"{counts['int8_right']}/{counts['samples']}{float_part}")
    if counts["per_label"]:
        print("per label: " + "  ".join(f"{label}:{count}" for label, count in counts["per_label"].items()))
    if written:
        print(f"wrote {written['path']}: {written['train']} to train on (x_train), {written['test']} to test on (x_test)")
    return 0


def run_serve(arguments):
    from edge_runtime.serve import server

    return server.main(arguments.serve_arguments)


def install_settings(arguments):
    """The InstallSettings the install, status and rollback options ask for."""
    from edge_runtime.install import environment, installer, probation

    token = None
    if getattr(arguments, "token_file", None) is not None:
        from edge_runtime.serve import server

        token = server.read_token(arguments.token_file)
    fields = {"root": arguments.root}
    if arguments.command in ("install", "rollback"):
        fields.update(restart_command=arguments.restart_command, service_unit=arguments.service_unit)
    if arguments.command == "install":
        fields.update(
            keep=arguments.keep, trusted_keys=arguments.trusted_keys, allow_unsigned=arguments.allow_unsigned,
            probation_settings=probation.ProbationSettings(service_url=arguments.service_url,
                                                  seconds=arguments.probation_seconds, token=token),
            recipe=environment.Recipe(python=arguments.python, system_site_packages=arguments.system_site_packages,
                                      extras=arguments.extras, no_deps=arguments.no_deps,
                                      pip_options=tuple(arguments.pip_options)))
    return installer.InstallSettings(**fields)


def run_install(arguments):
    from edge_runtime.install import installer, store

    try:
        return installer.install(arguments.bundle, install_settings(arguments))
    except store.BusyError as error:
        print(f"error: {errors.one_line(error)}", file=sys.stderr)
        return installer.EXIT_BUSY


def run_status(arguments):
    from edge_runtime.install import installer

    document = installer.status(install_settings(arguments))
    if arguments.json:
        print(json.dumps(document, indent=2))
    else:
        installer.print_status(document)
    return 0


def run_rollback(arguments):
    from edge_runtime.install import installer, store

    try:
        return installer.rollback(install_settings(arguments))
    except store.BusyError as error:
        print(f"error: {errors.one_line(error)}", file=sys.stderr)
        return installer.EXIT_BUSY
