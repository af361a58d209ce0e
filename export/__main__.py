"""`python -m export`: turn artifacts/model.keras into int8/float TFLite and ONNX files plus a manifest."""

import os
import pathlib
import sys

from edge_runtime.cli.options import OneLineParser

# TensorFlow's C++ start-up chatter (CPU features, oneDNN notes) buries the progress a user wants.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from export import pipeline, recovery, to_onnx, validation
from train import command, data


def parse_args(argv):
    defaults = pipeline.ExportConfig()
    tolerances = validation.Tolerances()
    parser = OneLineParser(prog="python -m export", description=__doc__)
    parser.add_argument("--model", type=pathlib.Path, default=defaults.model_path, dest="model_path")
    parser.add_argument("--output-dir", type=pathlib.Path, default=defaults.output_dir)
    parser.add_argument("--data", type=pathlib.Path, default=None, dest="data_source",
                        help="IDX directory or Keras-layout .npz the model was trained on (default: the pinned MNIST)")
    parser.add_argument("--labels", type=pathlib.Path, default=None, dest="labels_path",
                        help="class names, one a line (default: the digits for MNIST, else labels.txt beside the data)")
    parser.add_argument("--preparation", choices=pipeline.PREPARATION_CHOICES, default=defaults.preparation,
                        help="how the device prepares pictures: digit (MNIST-like) or plain; auto: digit for MNIST")
    parser.add_argument("--cache-dir", type=pathlib.Path, default=None)
    parser.add_argument("--calibration-size", type=int, default=defaults.calibration_size,
                        help="training images used to calibrate int8 ranges (stratified by class)")
    parser.add_argument("--calibration-seed", type=int, default=defaults.calibration_seed)
    parser.add_argument("--onnx-calibration-method", choices=to_onnx.CALIBRATION_METHODS,
                        default=defaults.onnx_calibration_method)
    parser.add_argument("--max-int8-drop", type=float, default=tolerances.int8_max_accuracy_drop_points,
                        help="largest accepted int8 accuracy loss against Keras, in percentage points")
    parser.add_argument("--float-probability-tolerance", type=float,
                        default=tolerances.float_max_probability_difference)
    ladder = recovery.RecoverySettings()
    parser.add_argument("--no-recovery", action="store_false", dest="recovery_enabled",
                        help="export plain int8 as it comes, without the recovery ladder (mixed precision, 16x8)")
    parser.add_argument("--validation-size", type=int, default=ladder.validation_size,
                        help="training images held out to choose the quantized model on (stratified by class)")
    parser.add_argument("--validation-seed", type=int, default=ladder.validation_seed)
    parser.add_argument("--max-float-layers", type=int, default=ladder.max_float_layers,
                        help="most layers the ladder keeps in float before it tries 16x8")
    return parser.parse_args(argv)


def main(argv=None):
    arguments = vars(parse_args(argv))

    def stage():
        tolerances = validation.Tolerances(
            int8_max_accuracy_drop_points=arguments.pop("max_int8_drop"),
            float_max_probability_difference=arguments.pop("float_probability_tolerance"),
        )
        settings = recovery.RecoverySettings(
            enabled=arguments.pop("recovery_enabled"), validation_size=arguments.pop("validation_size"),
            validation_seed=arguments.pop("validation_seed"), max_float_layers=arguments.pop("max_float_layers"))
        pipeline.run_export(pipeline.ExportConfig(tolerances=tolerances, recovery=settings, **arguments))

    # recovery.RecoveryFailed is a ValueError: one line, non-zero exit.
    return command.run(stage, (ValueError, FileNotFoundError, data.DataError, validation.ExportValidationError))


if __name__ == "__main__":
    sys.exit(main())
