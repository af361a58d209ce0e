"""`python -m train`: train the seed model for three epochs and save it under artifacts/."""

import os
import pathlib
import sys

from edge_runtime.cli import options

# TensorFlow's C++ start-up chatter (CPU features, oneDNN notes) buries the progress a user wants.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from train import command, data, training


def parse_args(argv):
    defaults = training.TrainConfig()
    parser = options.OneLineParser(prog="python -m train", description=__doc__)
    parser.add_argument("--output-dir", type=pathlib.Path, default=defaults.output_dir,
                        help="where model.keras, its history and curves go (default: %(default)s)")
    parser.add_argument("--data", type=pathlib.Path, default=None, dest="data_source",
                        help="IDX directory or Keras-layout .npz (default: the pinned MNIST, cached)")
    parser.add_argument("--labels", type=pathlib.Path, default=None, dest="labels_path",
                        help="class names, one a line (default: the digits for MNIST, else labels.txt beside the data)")
    parser.add_argument("--extra-data", type=pathlib.Path, default=None,
                        help="a Keras-layout .npz whose training images are added, e.g. collected samples "
                             "('mnist-edge samples DIR --out samples.npz')")
    parser.add_argument("--cache-dir", type=pathlib.Path, default=None,
                        help="where the verified MNIST cache lives (default: $MNIST_EDGE_CACHE or ~/.cache/mnist-edge)")
    parser.add_argument("--epochs", type=options.positive_integer, default=defaults.epochs,
                        help="passes over the training images (default: %(default)s)")
    parser.add_argument("--batch-size", type=options.positive_integer, default=defaults.batch_size,
                        help="images per training step (default: %(default)s)")
    parser.add_argument("--validation-split", type=options.checked(float, lambda value: 0.0 <= value < 1.0,
                                                                   "a number from 0 up to (not including) 1"),
                        default=defaults.validation_split,
                        help="share of the training images held out to watch each epoch (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="random seed of the weights and the shuffles (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv=None):
    arguments = parse_args(argv)
    return command.run(lambda: training.train(training.TrainConfig(**vars(arguments))), (ValueError, data.DataError))


if __name__ == "__main__":
    sys.exit(main())
