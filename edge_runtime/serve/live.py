"""Checks on live traffic: shadow agreement with the float model, labelled feedback, collected samples.

- **Shadow agreement.** A share (`shadow_rate`) of the predicted images also goes through the
  bundle's float reference; the running int8-float top-1 agreement is reported with its exact
  (Clopper-Pearson) interval, and so is the agreement over the last `window` shadowed images: when
  that falls below `min_agreement`, one warning line is logged (and /readyz turns false if asked).
- **Feedback.** Every predicted image gets an id. A person may label it once (POST /api/feedback);
  its float answer is then computed if it was not shadowed, and the pair of answers is counted in
  the four cells of the paired table: live accuracy of both models, and the paired change with the
  exact McNemar p and the conditional exact interval, from `edge_runtime.statistics`, the very
  functions `make compare` uses. Ids are forgotten after `id_seconds` or beyond `id_count`, and
  what is kept for them is capped in bytes, so memory stays bounded under any traffic.
- **Collection.** With a samples folder, each labelled image is written there (edge_runtime.samples).
- **Label-free drift.** Every predicted image's top-1 probability is counted in the bins the
  manifest records for the test set (edge_runtime.drift); the distance between the last
  `drift_window` images' histogram and the test set's is reported, and one line is logged when it
  crosses `drift_threshold` with at least `drift_min_images` images in the window.

Counts only, never per-request lists: memory does not grow with traffic.
"""

from __future__ import annotations

import collections
import json
import dataclasses
import random
import threading
import time

import numpy as np

from edge_runtime import drift, errors, samples, statistics
from edge_runtime.serve import bodies, model

CONFIDENCE = 0.95
# What the ids store keeps for each prediction (pixels, and the upload when collecting) is capped
# in bytes too: a few phone photos are tens of megabytes, a Pi may have 512 MiB.
DEFAULT_ID_BYTES = 64_000_000


@dataclasses.dataclass(frozen=True)
class LiveSettings:
    """How the live checks run; `serve`'s flags map onto these (see server.ServeConfig)."""

    shadow_rate: float = 1.0
    window: int = 200
    min_agreement: float = 0.99
    unready_below: bool = False
    id_count: int = 1000
    id_seconds: float = 600.0
    id_bytes: int = DEFAULT_ID_BYTES
    drift_window: int = 500
    drift_threshold: float = 0.15
    drift_min_images: int = 200


@dataclasses.dataclass
class Pending:
    """What is kept about one prediction until it is labelled or forgotten."""

    created: float
    int8_label: int
    int8_probabilities: np.ndarray
    pixels: np.ndarray | None  # the model's input, (H, W, C) (None once labelled)
    upload: bytes
    upload_name: str
    float_label: int | None = None  # known when the prediction was shadowed
    float_probabilities: np.ndarray | None = None
    labelled: bool = False
    request_id: str = ""  # the id of the answer that held this prediction

    @property
    def size(self):
        pixels = 0 if self.pixels is None else self.pixels.nbytes
        return pixels + len(self.upload) + 2 * self.int8_probabilities.nbytes


def proportion(successes, trials):
    """{successes, trials, value, interval} with the exact 95% interval (None values when no trials)."""
    if trials == 0:
        return {"successes": 0, "trials": 0, "value": None, "interval": None}
    low, high = statistics.clopper_pearson(successes, trials, CONFIDENCE)
    return {"successes": successes, "trials": trials, "value": successes / trials, "interval": [low, high]}


class LiveChecks:
    """The live checks of one served model (a ServedModel); thread-safe.

    `log` takes one line (the server's log); `folder` is a samples.SampleFolder or None;
    `clock` and `rng` are there for tests.
    """

    def __init__(self, served, settings, log, folder=None, clock=time.monotonic, rng=None):
        self.served = served
        self.settings = settings
        self.log = log
        self.folder = folder
        self.clock = clock
        self.rng = rng or random.Random()
        self.class_names = served.class_names
        self.has_reference = served.reference is not None
        self._lock = threading.Lock()
        self._pending = collections.OrderedDict()
        self._pending_bytes = 0
        # A request's id → the ids of its predictions, while they are kept: people send the id at
        # the top of the answer, and for one image that is as good as the prediction's.
        self._requests = {}
        self.shadowed = self.agreed = 0
        self._window = collections.deque(maxlen=settings.window)
        self.below = False
        self.cells = {"both_right": 0, "only_reference_right": 0, "only_candidate_right": 0, "both_wrong": 0}
        self.feedback_counts = collections.Counter()
        self.int8_right = 0  # over every labelled image, with or without a float answer
        self.collected = 0
        self.collect_failures = 0
        histogram = served.top1_histogram
        self.drift = None if histogram is None else drift.LiveHistogram(
            *histogram, settings.drift_window, settings.drift_threshold, settings.drift_min_images)
        self.drifted = False
        self.log_drift_settings()

    # --- after every prediction -----------------------------------------------------------------

    def after_prediction(self, prepared, outcome, answer):
        """A prediction listener (see app.Application): shadow a share, remember every image's id."""
        started = time.perf_counter()
        self.record_drift(outcome.probabilities)
        labels = outcome.probabilities.argmax(axis=1)
        shadow = self.has_reference and self.settings.shadow_rate > 0 and (
            self.settings.shadow_rate >= 1 or self.rng.random() < self.settings.shadow_rate)
        float_outcome = self.served.classify_float(prepared.model_input) if shadow else None
        now = self.clock()
        for index, prediction in enumerate(answer["predictions"]):
            entry = Pending(created=now, int8_label=int(labels[index]),
                            int8_probabilities=outcome.probabilities[index].copy(),
                            pixels=prepared.model_input[index].copy(),
                            upload=prepared.upload if self.folder is not None and len(prepared.names) == 1 else b"",
                            upload_name=prediction["name"], request_id=answer["id"])
            prediction["shadow"] = None
            if float_outcome is not None:
                entry.float_probabilities = float_outcome.probabilities[index].copy()
                entry.float_label = int(entry.float_probabilities.argmax())
                prediction["shadow"] = {"float_label": entry.float_label,
                                        "agrees": entry.float_label == entry.int8_label}
                self.record_agreement(entry.float_label == entry.int8_label)
            self.remember(prediction["id"], entry)
        if float_outcome is not None:
            answer.setdefault("timing_ms", {})["shadow"] = 1000 * (time.perf_counter() - started)

    def remember(self, prediction_id, entry):
        with self._lock:
            self._pending[prediction_id] = entry
            self._requests.setdefault(entry.request_id, []).append(prediction_id)
            self._pending_bytes += entry.size
            self._forget_old()

    def _forget_old(self):
        """Drop ids past their time, over the count, or over the byte cap, oldest first (lock held)."""
        limit = self.clock() - self.settings.id_seconds
        while self._pending:
            oldest_id, oldest = next(iter(self._pending.items()))
            if (oldest.created >= limit and len(self._pending) <= self.settings.id_count
                    and self._pending_bytes <= self.settings.id_bytes):
                break
            del self._pending[oldest_id]
            self._pending_bytes -= oldest.size
            self._requests.pop(oldest.request_id, None)

    def record_agreement(self, agrees):
        with self._lock:
            self.shadowed += 1
            self.agreed += int(agrees)
            self._window.append(bool(agrees))
            full = len(self._window) == self._window.maxlen
            window_agreement = sum(self._window) / len(self._window)
            below = full and window_agreement < self.settings.min_agreement
            changed, self.below = below != self.below, below
        if changed and below:
            self.log(f"warning: int8-float agreement {100 * window_agreement:.2f}% over the last "
                     f"{len(self._window)} shadowed images is below {100 * self.settings.min_agreement:.2f}%"
                     + (": /readyz answers 503" if self.settings.unready_below else ""))
        elif changed:
            self.log(f"int8-float agreement back to {100 * window_agreement:.2f}% over the last "
                     f"{len(self._window)} shadowed images (at least {100 * self.settings.min_agreement:.2f}%)")

    def log_drift_settings(self):
        """One line on what label-free drift compares, and a warning when its threshold is within the noise."""
        histogram = self.drift
        if histogram is None:
            self.log("label-free drift: off, the manifest has no top-1 histogram (exported before it); re-export to get one")
            return
        self.log(f"label-free drift: total variation against the test set's top-1 histogram over the last "
                 f"{histogram.window} images, threshold {histogram.threshold:g} from {histogram.min_images} images "
                 f"(sampling noise alone: {histogram.noise:.3f} at 99.9%)")
        if histogram.noise >= histogram.threshold:
            self.log(f"warning: drift threshold {histogram.threshold:g} is within the sampling noise of this model's "
                     f"test-set histogram: {histogram.min_images} ordinary images reach {histogram.noise:.3f} one time "
                     "in 1000; raise --drift-threshold or --drift-min-images")

    def record_drift(self, probabilities):
        """Count the images' top-1 probabilities; log once when the drift verdict changes."""
        if self.drift is None:
            return
        with self._lock:
            self.drift.add(probabilities)
            drifted = self.drift.drifted
            changed, self.drifted = drifted != self.drifted, drifted
            figures = self.drift.snapshot() if changed else None
        if changed:
            self.log(f"{'warning: ' if figures['drifted'] else ''}top-1 probability drift "
                     f"{figures['distance']:.3f} over the last {figures['images']} images is "
                     f"{'above' if figures['drifted'] else 'back within'} {figures['threshold']:g} "
                     "(total variation against the test set's histogram)")

    # --- POST /api/feedback ---------------------------------------------------------------------

    def feedback(self, document):
        """Label one prediction: {"id": ..., "label": class index or class name}.

        Returns the JSON answer. Raises: HTTPError 400 (bad body or label), 404 (unknown or
        forgotten id), 409 (already labelled).
        """
        if not isinstance(document, dict) or "id" not in document or "label" not in document:
            self.count_refusal("bad")
            raise bodies.HTTPError(400, 'feedback must be a JSON object {"id": "<prediction id>", "label": <class>}')
        prediction_id = document["id"]
        label = self.class_index(document["label"])
        if not isinstance(prediction_id, str):
            self.count_refusal("bad")
            raise bodies.HTTPError(400, f"id must be the prediction's id (a string), got {type(prediction_id).__name__}")
        with self._lock:
            self._forget_old()
            prediction_id = self.prediction_of(prediction_id)
            entry = self._pending.get(prediction_id)
            if entry is None:
                self.feedback_counts["unknown_id"] += 1
                raise bodies.HTTPError(404, f"no prediction with id {prediction_id[:40]!r}: unknown, or forgotten "
                                            f"(ids are kept {self.settings.id_seconds:g} s, the last "
                                            f"{self.settings.id_count} predictions); send the 'id' of an answer of "
                                            "/api/predict, or of one of its predictions")
            if entry.labelled:
                self.feedback_counts["already_labelled"] += 1
                raise bodies.HTTPError(409, f"prediction {prediction_id[:40]} is already labelled; a label counts once")
            entry.labelled = True
            pixels, entry.pixels = entry.pixels, None
            upload, entry.upload = entry.upload, b""
            self._pending_bytes -= pixels.nbytes + len(upload)
        if entry.float_label is None and self.has_reference:
            float_outcome = self.served.classify_float(pixels[np.newaxis])
            entry.float_probabilities = float_outcome.probabilities[0]
            entry.float_label = int(entry.float_probabilities.argmax())
        int8_right = entry.int8_label == label
        float_right = None if entry.float_label is None else entry.float_label == label
        with self._lock:
            self.feedback_counts["labelled"] += 1
            self.int8_right += int(int8_right)
            if float_right is not None:
                cell = {(True, True): "both_right", (True, False): "only_reference_right",
                        (False, True): "only_candidate_right", (False, False): "both_wrong"}[(float_right, int8_right)]
                self.cells[cell] += 1
        collected = self.collect(prediction_id, entry, pixels, upload, label)
        return {
            "id": prediction_id,
            "label": label,
            "class_name": self.class_names[label],
            "int8_label": entry.int8_label,
            "float_label": entry.float_label,
            "int8_right": int8_right,
            "float_right": float_right,
            "collected": collected,
            "live": self.snapshot(),
        }

    def prediction_of(self, given_id):
        """The prediction id that `given_id` names: itself, or the one prediction of the request it
        is the id of (lock held). HTTPError 400 for a request of several images."""
        predictions = self._requests.get(given_id)
        if given_id in self._pending or predictions is None:
            return given_id
        if len(predictions) > 1:
            self.feedback_counts["bad"] += 1
            raise bodies.HTTPError(400, f"{given_id[:40]} is the id of a request of {len(predictions)} images: label "
                                        "each image by its own id (predictions[i].id in the answer)")
        return predictions[0]

    def class_index(self, value):
        """A label as sent (a class index, or a class name) as the class index; HTTPError 400 otherwise."""
        names = self.class_names
        if isinstance(value, str) and value in names:
            return names.index(value)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
            return value
        self.count_refusal("bad")
        raise bodies.HTTPError(400, f"label must be a class index 0..{len(names) - 1} or one of the class names "
                                    f"({', '.join(names)}), got {json.dumps(value)[:40]}")

    def count_refusal(self, reason):
        with self._lock:
            self.feedback_counts[reason] += 1

    def collect(self, prediction_id, entry, pixels, upload, label):
        """Write the labelled sample when collecting; return its file name, or None (logged on failure)."""
        if self.folder is None:
            return None
        seen = model.picture_of(pixels)
        sample = samples.Sample(
            id=prediction_id, time=time.time(), label=label, int8_label=entry.int8_label,
            float_label=-1 if entry.float_label is None else entry.float_label, seen=seen,
            upload=upload, upload_name=entry.upload_name, int8_probabilities=entry.int8_probabilities,
            float_probabilities=np.zeros(0, np.float32) if entry.float_probabilities is None else entry.float_probabilities,
            class_names=tuple(self.class_names))
        try:
            path = self.folder.add(sample)
        except (OSError, errors.EdgeRuntimeError) as error:
            with self._lock:
                self.collect_failures += 1
            self.log(f"warning: sample {prediction_id} not collected: {getattr(error, 'strerror', None) or error}")
            return None
        with self._lock:
            self.collected += 1
        return path.name

    # --- what /api/info, /metrics and the page show ---------------------------------------------

    def snapshot(self):
        """Every live figure as one JSON-ready dict, read under one lock so the figures agree."""
        with self._lock:
            window = list(self._window)
            cells = dict(self.cells)
            shadowed, agreed, below = self.shadowed, self.agreed, self.below
            feedback = dict(self.feedback_counts)
            pending = len(self._pending)
            pending_bytes = self._pending_bytes
            collected, collect_failures = self.collected, self.collect_failures
            int8_right_all = self.int8_right
            drift_figures = None if self.drift is None else self.drift.snapshot()
        paired_total = sum(cells.values())
        paired = statistics.paired_comparison_from_counts(**cells, confidence=CONFIDENCE) if paired_total else None
        float_right = cells["both_right"] + cells["only_reference_right"]
        labelled = feedback.get("labelled", 0)
        return {
            "reference": self.served.reference_name,
            "shadow": {
                "rate": self.settings.shadow_rate if self.has_reference else 0.0,
                "agreement": proportion(agreed, shadowed),
                "window": {
                    "size": self.settings.window,
                    "filled": len(window),
                    "agreement": proportion(sum(window), len(window)),
                    "min_agreement": self.settings.min_agreement,
                    "below": below,
                    "unready_below": self.settings.unready_below,
                },
            },
            "feedback": {
                "labelled": labelled,
                "refused": {reason: count for reason, count in feedback.items() if reason != "labelled"},
                "ids_kept": pending,
                "ids_bytes": pending_bytes,
                "id_seconds": self.settings.id_seconds,
                "id_count": self.settings.id_count,
            },
            # int8 over every labelled image; float and the paired change over those both models
            # answered (all of them, unless the bundle has no float reference): compare's figures, live.
            "accuracy": {
                "int8": proportion(int8_right_all, labelled),
                "float": proportion(float_right, paired_total),
                "change": None if paired is None else {
                    "points": paired["difference_points"],
                    "interval_points": [paired["ci_low_points"], paired["ci_high_points"]],
                    "mcnemar_p": paired["p_value"],
                    "only_int8_right": paired["only_candidate_right"],
                    "only_float_right": paired["only_reference_right"],
                    "method": paired["method"],
                },
            },
            "drift": drift_figures,  # None when the manifest has no top-1 histogram
            "collect": None if self.folder is None else {
                "folder": str(self.folder.directory),
                "collected": collected,
                "failed": collect_failures,
                "kept": self.folder.count,
                "bytes": self.folder.bytes,
                "max_samples": self.folder.max_samples,
                "max_bytes": self.folder.max_bytes,
            },
        }

    def readiness_problem(self):
        """None, or why /readyz should answer 503 (the shadow window is below its threshold and that gates)."""
        if self.settings.unready_below and self.below:
            return (f"int8-float agreement over the last {self.settings.window} shadowed images is below "
                    f"{100 * self.settings.min_agreement:.2f}%")
        return None
