"""`python -m edge_runtime` (or `mnist-edge`): predict, eval, bench, info, samples and serve on the device.

Every failure a user can cause (a missing or tampered file, an image that is not one, a bad
option) ends in one line on stderr naming the thing and the problem, and a non-zero exit status:
1 for a bad file or input, 2 for a bad option, 3 for a failed accuracy check, 130 for Ctrl-C.
`install` adds 4 (rolled back after probation) and 75 (another install is running): see
edge_runtime/install/installer.py.
"""

import json
import os
import sys
import types

from edge_runtime import backends, errors, manifest as manifest_module
from edge_runtime.cli.defaults import PREDICT_DEFAULTS


def parse_arguments(argv):
    """The parsed command line: argparse's Namespace, or for `predict MODEL IMAGE...` with nothing
    that starts with "-" but "-" (stdin), the same fields without importing argparse (nor pathlib:
    `model` stays the str given; every command takes a str or a path)."""
    if len(argv) >= 3 and argv[0] == "predict" and not any(item.startswith("-") and item != "-" for item in argv[1:]):
        return types.SimpleNamespace(command="predict", model=argv[1], images=list(argv[2:]),
                                     **PREDICT_DEFAULTS)
    from edge_runtime.cli import options

    parser = options.build_parser(argv[0] if argv and argv[0] in options.COMMANDS else None)
    arguments = parser.parse_args(argv)
    options.check_together(parser, arguments)
    return arguments


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:  # what a newcomer types first: the commands, not an error
        from edge_runtime.cli import options

        print(options.build_parser().format_help(), end="")
        return 0
    arguments = parse_arguments(argv)
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


def load_target(arguments, target):
    """The Classifier for a bundle directory (its int8 model, by its manifest role) or a model file."""
    from edge_runtime import bundle

    return load_classifier(arguments, bundle.model_path(target, arguments.backend))


def image_sources(items):
    """Turn file, directory and '-' arguments into (name, path or bytes) pairs, and one line per
    argument that gives no image (an unlistable or empty directory); stdin is read as bytes."""
    from edge_runtime.pictures import decoding

    sources, problems = [], []
    for item in items:
        if item == "-":
            sources.append(("<stdin>", sys.stdin.buffer.read()))
            continue
        path = os.fspath(item)
        if os.path.isdir(path):
            try:
                found = sorted(os.path.join(path, name) for name in os.listdir(path)
                               if os.path.splitext(name)[1].lower() in decoding.IMAGE_SUFFIXES)
            except OSError as error:
                problems.append(f"{path}: cannot list directory: {error.strerror or error}")
                continue
            if not found:
                problems.append(
                    f"{path}: directory holds no image files ({', '.join(sorted(decoding.IMAGE_SUFFIXES))})")
            sources.extend((child, child) for child in found)
        else:
            sources.append((path, path))
    return sources, problems


def prepare_each(sources, preparation_for_model):
    """Prepare every source on its own: (float32 batch or None, names, one line per file refused)."""
    import numpy as np

    from edge_runtime.pictures import preparation

    batches, names, problems = [], [], []
    for name, source in sources:
        try:
            batch, batch_names = preparation.prepare_files([source], preparation_for_model, names=[name])
        except errors.InputError as error:
            problems.append(str(error))
            continue
        batches.append(batch)
        names.extend(batch_names)
    return (np.concatenate(batches) if batches else None), names, problems


def run_predict(arguments):
    """Classify every image; the good ones are printed, then one line per bad file (exit 1 if any)."""
    from edge_runtime import records
    from edge_runtime.pictures import preparation

    model = load_target(arguments, arguments.model)
    sources, problems = image_sources(arguments.images)
    batch, names, refused = prepare_each(sources, preparation.for_classifier(model))
    problems += refused
    results = []
    if batch is not None:
        predictions = model.predict(batch, name=names[0] if len(names) == 1 else "images")
        results = records.records(predictions, names, arguments.top_k)
    if arguments.json:
        print(json.dumps({"model": str(model.path), "backend": model.backend.name, "classes": list(model.class_names),
                          "predictions": [result.as_dict() for result in results], "errors": problems}, indent=2))
    elif results:
        width = max(len(result.name) for result in results)
        for result in results:
            alternatives = "  ".join(f"{class_name}:{probability:.3f}" for _, class_name, probability in result.top_k[1:])
            print(f"{result.name:<{width}}  {records.class_text(result.class_name, result.label)}  "
                  f"{result.probability:.3f}  {alternatives}".rstrip())
    sys.stdout.flush()
    for problem in problems:
        print(f"error: {errors.one_line(problem)}", file=sys.stderr)
    return errors.EXIT_BAD_INPUT if problems else 0


def eval_models(target, allow_missing):
    """What `eval` checks: (bundle directory, Manifest, model paths, notes). A directory's models are
    the int8 models its manifest lists; a file is checked alone, against the manifest beside it.

    Raises: ModelFileError for listed files that are missing (unless `allow_missing`: then they are
    noted and skipped), BackendUnavailableError when no installed interpreter runs any of them.
    """
    from edge_runtime import bundle

    if not target.exists():
        raise errors.ModelFileError(f"{target}: no such bundle directory or model file")
    directory = target if target.is_dir() else target.parent
    document = manifest_module.read_manifest(directory / manifest_module.MANIFEST_NAME)
    if target.is_dir():
        listed = [directory / name for name in document.files_with_role(manifest_module.ROLE_INT8_MODEL)]
    else:
        listed = [target]
    missing = [path for path in listed if not path.exists()]
    reference = document.file_with_role(manifest_module.ROLE_FLOAT_REFERENCE)
    if reference is not None and not (directory / reference).is_file():
        missing.append(directory / reference)
    if missing and not allow_missing:
        raise errors.ModelFileError(f"{bundle.missing_files_message(directory, missing)} (--allow-missing skips them)")
    notes = [f"note: skipping {path.name}: listed in the manifest but missing" for path in missing]
    models = []
    for path in listed:
        if path in missing:
            continue
        if bundle.runnable(path):
            models.append(path)
        else:
            notes.append(f"note: skipping {path.name}: no interpreter for it is installed")
    if not models:
        raise errors.BackendUnavailableError(
            f"{target}: no installed interpreter runs its models; 'pip install mnist-edge[edge]'")
    return directory, document, models, notes


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
    from edge_runtime import self_check

    directory, document, paths, notes = eval_models(arguments.target, arguments.allow_missing)
    for note in notes:
        print(note, file=sys.stderr)
    test = self_check.images_to_check(directory, document, arguments.test_set, arguments.images)
    reference, note = self_check.load_reference(directory, document, arguments.backend, arguments.threads,
                                                check_integrity=not arguments.skip_integrity_check,
                                                allow_missing=True)  # a missing one was refused or noted above
    if note:
        print(f"note: {note}", file=sys.stderr)
    models = [load_classifier(arguments, path) for path in paths]
    verdict = self_check.check(models, reference, test, document, arguments.tolerance, arguments.strict,
                               progress=Progress)
    results = verdict.results
    if arguments.save_outputs:
        save_outputs(arguments.save_outputs, results)
    if arguments.json:
        from edge_runtime.cli import cold_start

        # The whole process's high-water mark: what a device needs to run this eval.
        print(json.dumps({"tolerance_points": verdict.tolerance_points, "classes": list(document.classes),
                          "float_accuracy_source": verdict.float_accuracy_source,
                          "results": [result.as_dict(document.classes) for result in results],
                          "passed": verdict.passed, "peak_rss_mib": cold_start.peak_rss_kib() / 1024}, indent=2))
    else:
        print_eval_table(results, verdict.tolerance_points, document.classes, verdict.float_accuracy_source)
    for failure in verdict.failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return errors.EXIT_FAILED_CHECK if verdict.failures else 0


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


def print_eval_table(results, tolerance, class_names, float_source):
    from edge_runtime import evaluation, records

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
    print(f"(float: the float model's accuracy {float_source}; change: against it, in percentage points; "
          f"tolerance {tolerance:.2f})")
    print()
    class_rows = [("class", *(result.model for result in results))]
    for index, name in enumerate(class_names):
        class_rows.append((records.class_text(name, index), *(percent(result.per_class_accuracy[index]) for result in results)))
    print_table(class_rows)


def print_table(rows):
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def run_bench(arguments):
    import numpy as np

    from edge_runtime import evaluation
    from edge_runtime.cli import benchmarking

    model = load_target(arguments, arguments.model)
    test_set = arguments.test_set
    if test_set is None and model.manifest is not None:
        name = model.manifest.file_with_role(manifest_module.ROLE_TEST_SET)
        test_set = None if name is None else model.path.with_name(name)
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
        ("model", f"{model.path} ({result['backend']}, {arguments.threads} thread(s))"),
        ("latency, batch 1", f"p50 {latency['p50']:.3f} ms  p90 {latency['p90']:.3f} ms  p99 {latency['p99']:.3f} ms"),
        (f"throughput, batch {arguments.batch_size}", f"{result['throughput_images_per_s']:,.0f} images/s"),
        ("cold start", f"{result['cold_start_s']:.3f} s (process start to first prediction)"),
        ("peak RSS", f"{result['peak_rss_mib']:.1f} MiB"),
    ]))
    return 0


def run_info(arguments):
    from edge_runtime.pictures import preparation

    model = load_target(arguments, arguments.model)
    document = model.manifest
    entry = None if document is None else document.files.get(model.path.name)
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
        if entry.precision is not None:
            recovered = (document.recovery or {}).get("models", {}).get(entry.name)
            how = "" if recovered is None or recovered["chosen"] == "int8" else \
                f", chosen by the export's recovery ladder at step {recovered['chosen']}"
            print(f"{'precision':<14} {manifest_module.describe_precision(entry.precision, entry.details.get('float_layers', ()))}{how}")
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
    import dataclasses

    from edge_runtime.serve import server

    fields = {field.name for field in dataclasses.fields(server.ServeConfig)}
    return server.main(server.ServeConfig(**{name: value for name, value in vars(arguments).items() if name in fields}))


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
            gate_images=arguments.gate_images,
            probation_settings=probation.ProbationSettings(service_url=arguments.service_url,
                                                  seconds=arguments.probation_seconds, token=token,
                                                  require_agreement=arguments.require_agreement),
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
