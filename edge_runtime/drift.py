"""Label-free drift: how the model's top-1 probability is spread on live traffic against the test set.

Most live images are never labelled, but the model always says how sure it is. At export, the
int8 model's top-1 probability on the test set is counted in a few bins (the manifest records the
edges and each model's counts). `serve` counts its live images in the same bins, over the last
`window` of them, and reports the total variation distance between the two distributions:

    distance = 1/2 * sum over bins of |live share - test-set share|, in [0, 1]

It is the share of live images that would have to move to another bin for the two to match. It
costs one subtraction per bin, has no trouble with an empty bin (a population stability index takes
a logarithm of each share, so it needs a made-up floor for empty ones), and its sampling noise is
known: with n images it is of the order of sqrt(bins / n) / 2 when nothing has changed.

What it can tell: the model has become less (or more) sure of its answers than it was on the test
set: pictures unlike the training data (not digits, inverted, another camera or pen), or a new
mix of classes whose confidences differ. What it cannot tell: whether the answers are right. A
shift the model is sure about (a confidently wrong digit) leaves the histogram as it was, and a
harmless change (a fainter pen the model still reads) can move it. docs/fleet.md says more.
"""

import bisect
import collections

import numpy as np

# Bin edges of the top-1 probability. The int8 model's softmax output is quantized in steps of
# 1/256 and reaches at most 255/256, so the upper bins are a few steps wide: on MNIST most test images
# fall in the last one. A softmax over K classes never puts its top-1 below 1/K.
DEFAULT_EDGES = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 1.0)
STATISTIC = "total variation distance between top-1 probability histograms"


def check_edges(edges):
    """Return `edges` as a tuple of floats; raise ValueError unless they rise strictly from 0 to 1."""
    values = tuple(float(edge) for edge in edges)
    if len(values) < 3 or values[0] != 0.0 or values[-1] != 1.0 or any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"top-1 histogram edges must rise strictly from 0 to 1 with at least two bins, got {list(edges)}")
    return values


def bin_indices(probabilities, edges):
    """The bin of each row's top-1 probability: (N, K) probabilities -> a list of N indices into the bins.

    Bins are [edge_i, edge_i+1), the last one closed: a top-1 of exactly 1.0 falls in it. bisect on
    a Python list, not numpy: serve calls this for every request of one image, where numpy's
    per-call overhead is most of the cost (9 against 67 microseconds here).
    """
    last_bin = len(edges) - 2
    return [min(max(bisect.bisect_right(edges, top1) - 1, 0), last_bin)
            for top1 in np.asarray(probabilities).max(axis=1).tolist()]


def top1_counts(probabilities, edges):
    """How many rows of (N, K) `probabilities` have their top-1 in each bin; a list of ints."""
    counts = [0] * (len(edges) - 1)
    for index in bin_indices(probabilities, edges):
        counts[index] += 1
    return counts


def total_variation(counts, reference_counts):
    """Half the L1 distance between the two histograms as shares, in [0, 1].

    Raises: ValueError when the histograms have different bins or either is empty.
    """
    counts, reference = np.asarray(counts, dtype=np.float64), np.asarray(reference_counts, dtype=np.float64)
    if counts.shape != reference.shape:
        raise ValueError(f"histograms with {counts.size} and {reference.size} bins cannot be compared")
    if counts.sum() <= 0 or reference.sum() <= 0:
        raise ValueError("cannot compare an empty histogram")
    return float(0.5 * np.abs(counts / counts.sum() - reference / reference.sum()).sum())


def noise_quantile(reference_counts, images, quantile=0.999, draws=10_000, seed=0):
    """The distance that `images` drawn at random from the reference histogram itself stay under with
    probability `quantile`: what sampling noise alone reaches, so a threshold must sit above it.

    A confident model (most images in the last bin) has little noise; a model whose top-1 is spread
    over many bins has more (a flat 8-bin histogram: 0.15 at 200 images), so a fixed threshold that
    suits MNIST can alarm on another model's ordinary traffic. Multinomial draws, seeded: 20 ms on x86.
    """
    shares = np.asarray(reference_counts, dtype=np.float64)
    shares = shares / shares.sum()
    drawn = np.random.default_rng(seed).multinomial(int(images), shares, size=draws)
    return float(np.quantile(0.5 * np.abs(drawn / images - shares).sum(axis=1), quantile))


class LiveHistogram:
    """The top-1 bins of the last `window` live images (a ring of small integers), against a reference.

    Per request it costs microseconds: the distance is summed in plain Python over a handful of bins.
    Not thread-safe: its owner (serve's LiveChecks) holds its own lock around it.
    """

    def __init__(self, edges, reference_counts, window, threshold, min_images):
        self.edges = check_edges(edges)
        if len(reference_counts) != len(self.edges) - 1 or sum(reference_counts) <= 0:
            raise ValueError(f"reference counts {list(reference_counts)} do not fit {len(self.edges) - 1} bins")
        if not 1 <= min_images <= window:
            raise ValueError(f"the minimum count must be 1..window ({window}), got {min_images}")
        self.reference_counts = [int(count) for count in reference_counts]
        total = sum(self.reference_counts)
        self._reference_shares = [count / total for count in self.reference_counts]
        self.threshold, self.min_images = float(threshold), int(min_images)
        self._recent = collections.deque(maxlen=int(window))
        self.counts = [0] * (len(self.edges) - 1)  # of the images in the window
        self.seen = 0  # every image since start
        self.noise = noise_quantile(self.reference_counts, self.min_images)  # at the minimum count, 99.9%

    def add(self, probabilities):
        """Count (N, K) probabilities, dropping the oldest beyond the window."""
        for index in bin_indices(probabilities, self.edges):
            if len(self._recent) == self._recent.maxlen:
                self.counts[self._recent[0]] -= 1
            self._recent.append(index)
            self.counts[index] += 1
            self.seen += 1

    @property
    def window(self):
        return self._recent.maxlen

    @property
    def distance(self):
        """Total variation between the window's histogram and the reference (None while the window is empty)."""
        images = len(self._recent)
        if not images:
            return None
        return 0.5 * sum(abs(count / images - share) for count, share in zip(self.counts, self._reference_shares))

    @property
    def drifted(self):
        """True when the window holds at least the minimum count and its distance is above the threshold."""
        return len(self._recent) >= self.min_images and self.distance > self.threshold

    def snapshot(self):
        """The figures /api/info and /metrics show, as a JSON-ready dict."""
        images = len(self._recent)
        return {
            "statistic": STATISTIC,
            "edges": list(self.edges),
            "reference_counts": list(self.reference_counts),
            "window": self.window,
            "window_counts": list(self.counts),
            "images": images,
            "seen": self.seen,
            "distance": self.distance,
            "threshold": self.threshold,
            "min_images": self.min_images,
            "noise_at_min_images": self.noise,
            "enough_images": images >= self.min_images,
            "drifted": self.drifted,
        }
