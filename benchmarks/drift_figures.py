"""How far label-free drift moves for a few feeds, against the sampling noise of MNIST itself (docs/fleet.md).

    python benchmarks/drift_figures.py --artifacts artifacts [--window 500]

Runs the exported int8 TFLite model on each feed's first `window` images as model input (pixels as
they are, no preparation; the last feed goes through the digit preparation as PNG files) and prints the total variation distance of their top-1 histogram from
the one the manifest records; then the distance of `window` images drawn at random from the MNIST
test set, 20,000 times, as quantiles (what the threshold must stay clear of). Fashion-MNIST comes
from Debian's dataset-fashion-mnist.
"""

import argparse
import gzip
import io
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from edge_runtime import Classifier, drift, manifest  # noqa: E402
from edge_runtime.pictures import preparation  # noqa: E402

FASHION_MNIST = pathlib.Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
DRAWS = 20_000


def png(image):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=pathlib.Path, default=pathlib.Path("artifacts"))
    parser.add_argument("--window", type=int, default=500)
    arguments = parser.parse_args(argv)
    document = manifest.read_manifest(arguments.artifacts / manifest.MANIFEST_NAME)
    name = manifest.DEFAULT_FILE_NAMES["int8_tflite"]
    reference, edges = document.files[name].top1_counts, document.top1_edges
    model = Classifier.load(arguments.artifacts / name)
    with np.load(arguments.artifacts / manifest.DEFAULT_FILE_NAMES["test_set"]) as archive:
        digits, labels = archive["x_test"], archive["y_test"]
    window = arguments.window
    with gzip.open(FASHION_MNIST) as handle:
        fashion = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    noise = np.random.default_rng(0).integers(0, 256, (window, 28, 28), dtype=np.uint8)
    quarter, tenth = window // 4, window // 10
    feeds = {
        "MNIST test images, first in order": digits[:window],
        "inverted MNIST (dark digit on light)": 255 - digits[:window],
        "Fashion-MNIST (clothes)": fashion[:window],
        "uniform noise": noise,
        "MNIST with 25% Fashion-MNIST": np.concatenate([digits[:window - quarter], fashion[:quarter]]),
        "MNIST with 10% Fashion-MNIST": np.concatenate([digits[:window - tenth], fashion[:tenth]]),
        **{f"MNIST, only the digit {digit}": digits[labels == digit][:window] for digit in (1, 8, 9)},
    }
    print(f"| feed ({window} images) | distance |\n|---|---:|")
    for feed, images in feeds.items():
        distance = drift.total_variation(drift.top1_counts(model.predict(images).probabilities, edges), reference)
        print(f"| {feed} | {distance:.3f} |")
    prepared, _ = preparation.prepare_files([png(255 - image) for image in digits[:window]],
                                            preparation.for_classifier(model))
    distance = drift.total_variation(drift.top1_counts(model.predict(prepared).probabilities, edges), reference)
    print(f"| inverted MNIST as PNG files, through the digit preparation | {distance:.3f} |")
    bins = drift.bin_indices(model.predict(digits).probabilities, edges)
    generator = np.random.default_rng(1)
    for size in sorted({200, window}):
        distances = np.array([drift.total_variation(np.bincount(generator.choice(bins, size), minlength=len(edges) - 1),
                                                    reference) for _ in range(DRAWS)])
        print(f"MNIST test set, {size} images drawn at random {DRAWS:,} times: mean {distances.mean():.3f}, "
              f"99% {np.quantile(distances, 0.99):.3f}, 99.9% {np.quantile(distances, 0.999):.3f}, "
              f"largest {distances.max():.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
