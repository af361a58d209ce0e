"""Prometheus metrics of the service, in a registry of its own, exposed at GET /metrics.

Labels stay bounded: routes are the known ones (anything else is "other"), statuses and classes
are few, so a scraping Prometheus and this process's memory both stay small under any traffic.
"""

import prometheus_client
from prometheus_client import core

# Request latency on a Pi runs from a fraction of a millisecond (pixels) to a second (a large photo).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Counters and gauges for one served model; `model`, `sha256` and `backend` label its facts,
    `manifest_sha256` (the sha256 of the bundle's manifest.json) names the export as a whole."""

    def __init__(self, model, sha256, backend, manifest_sha256=None):
        self.registry = prometheus_client.CollectorRegistry()
        model_labels = ("model", "sha256", "backend")
        self.model_labels = {"model": model, "sha256": sha256 or "", "backend": backend}
        prometheus_client.ProcessCollector(registry=self.registry)
        self.model_info = prometheus_client.Gauge(
            "mnist_edge_model_info", "The served model: always 1, its facts are the labels.",
            model_labels, registry=self.registry)
        self.model_info.labels(**self.model_labels).set(1)
        # The fleet's "which version runs where": one value of this label per export.
        self.manifest_info = prometheus_client.Gauge(
            "mnist_edge_manifest_info", "The served bundle's manifest: always 1, its sha256 is the label.",
            ("manifest_sha256",), registry=self.registry)
        self.manifest_info.labels(manifest_sha256=manifest_sha256 or "").set(1)
        self.requests = prometheus_client.Counter(
            "mnist_edge_http_requests", "HTTP requests by route and status.",
            ("route", "status"), registry=self.registry)
        self.latency = prometheus_client.Histogram(
            "mnist_edge_http_request_duration_seconds", "Time to answer a request, by route.",
            ("route",), buckets=LATENCY_BUCKETS, registry=self.registry)
        self.predictions = prometheus_client.Counter(
            "mnist_edge_predictions", "Images classified, by predicted class.",
            ("class_name",), registry=self.registry)
        gauges = {
            "accuracy": "Accuracy of the served model on the bundled test set at start-up (0..1).",
            "float_accuracy": "Accuracy of the float model it was compared with (0..1).",
            "drop_points": "Accuracy lost against the float model at start-up, in percentage points.",
            "images": "Test images the start-up self-check used.",
            "passed": "1 when the start-up self-check passed, else 0.",
            "tolerance_points": "Largest accuracy drop against the float model the self-check accepts, in points.",
        }
        self.self_check = {
            name: prometheus_client.Gauge(f"mnist_edge_self_check_{name}", text, model_labels, registry=self.registry)
            for name, text in gauges.items()
        }

    def record_self_check(self, check):
        """Publish a self_check.BundleCheck (or None when it was skipped: passed 0, the rest absent)."""
        self.self_check["passed"].labels(**self.model_labels).set(0 if check is None else int(check.passed))
        if check is None:
            return
        summary = check.summary()
        for name in ("accuracy", "float_accuracy", "drop_points", "images", "tolerance_points"):
            value = summary[name]
            if value is not None:
                self.self_check[name].labels(**self.model_labels).set(value)

    def record_request(self, route, status, seconds):
        self.requests.labels(route=route, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def record_prediction(self, class_name):
        self.predictions.labels(class_name=class_name).inc()

    def watch_live(self, snapshot):
        """Publish the live checks: `snapshot()` (LiveChecks.snapshot) is read at each scrape, so
        /metrics and /api/info show the same figures."""
        self.registry.register(LiveCollector(snapshot))

    def watch_rollbacks(self, count):
        """Publish `count()`, the automatic rollbacks the install root's state file records, read at
        each scrape: `mnist-edge install` writes it, this process only shows it to the fleet."""
        self.registry.register(RollbackCollector(count))

    def exposition(self):
        """Return (body bytes, content type) in Prometheus' text format."""
        return prometheus_client.generate_latest(self.registry), prometheus_client.CONTENT_TYPE_LATEST


class RollbackCollector:
    """mnist_edge_rollbacks_total: automatic rollbacks on this device, as `mnist-edge install` counted them."""

    def __init__(self, count):
        self.count = count

    def describe(self):
        return []

    def collect(self):
        rollbacks = core.CounterMetricFamily(
            "mnist_edge_rollbacks", "Automatic rollbacks after a failed probation, since the first install.")
        rollbacks.add_metric([], self.count())
        yield rollbacks


class LiveCollector:
    """The live checks' figures as Prometheus metrics, made from one snapshot per scrape."""

    def __init__(self, snapshot):
        self.snapshot = snapshot

    def describe(self):
        return []  # no fixed set: figures without data yet (no labels) are left out

    def collect(self):
        live = self.snapshot()
        shadow, feedback, accuracy = live["shadow"], live["feedback"], live["accuracy"]
        rate = core.GaugeMetricFamily("mnist_edge_shadow_rate", "Share of predicted images also run by the float reference.")
        rate.add_metric([], shadow["rate"])
        yield rate
        shadowed = core.CounterMetricFamily("mnist_edge_shadow_images", "Images also run by the float reference.")
        shadowed.add_metric([], shadow["agreement"]["trials"])
        yield shadowed
        agreed = core.CounterMetricFamily("mnist_edge_shadow_agreements", "Shadowed images where int8 and float gave the same label.")
        agreed.add_metric([], shadow["agreement"]["successes"])
        yield agreed
        agreement = core.GaugeMetricFamily(
            "mnist_edge_shadow_agreement_ratio",
            "int8-float top-1 agreement on shadowed images, since start (scope=all) or over the last N (scope=window), "
            "with its exact 95% interval (bound=low/high).", labels=("scope", "bound"))
        for scope, figure in (("all", shadow["agreement"]), ("window", shadow["window"]["agreement"])):
            add_proportion(agreement, [scope], figure)
        yield agreement
        below = core.GaugeMetricFamily("mnist_edge_shadow_window_below_threshold",
                                       "1 while the agreement over the last N shadowed images is below the threshold.")
        below.add_metric([], int(shadow["window"]["below"]))
        yield below
        filled = core.GaugeMetricFamily("mnist_edge_shadow_window_images",
                                        "Shadowed images in the agreement window (the threshold applies once it is full).")
        filled.add_metric([], shadow["window"]["filled"])
        yield filled
        if live["drift"] is not None:
            yield from drift_metrics(live["drift"])
        refused = core.CounterMetricFamily("mnist_edge_feedback", "Labels received, by outcome.", labels=("result",))
        refused.add_metric(["labelled"], feedback["labelled"])
        for reason, count in feedback["refused"].items():
            refused.add_metric([reason], count)
        yield refused
        live_accuracy = core.GaugeMetricFamily(
            "mnist_edge_live_accuracy_ratio",
            "Accuracy on labelled images both models answered, with its exact 95% interval (bound=low/high).",
            labels=("model", "bound"))
        for model in ("int8", "float"):
            add_proportion(live_accuracy, [model], accuracy[model])
        yield live_accuracy
        pairs = core.GaugeMetricFamily("mnist_edge_live_labelled_pairs", "Labelled images both models answered.")
        pairs.add_metric([], accuracy["int8"]["trials"])
        yield pairs
        change = accuracy["change"]
        if change is not None:
            points = core.GaugeMetricFamily(
                "mnist_edge_live_change_points",
                "int8 minus float accuracy on labelled images, in points, with the conditional exact 95% interval.",
                labels=("bound",))
            points.add_metric(["estimate"], change["points"])
            points.add_metric(["low"], change["interval_points"][0])
            points.add_metric(["high"], change["interval_points"][1])
            yield points
            p_value = core.GaugeMetricFamily("mnist_edge_live_mcnemar_p", "Exact McNemar p of the int8-float difference.")
            p_value.add_metric([], change["mcnemar_p"])
            yield p_value
        if live["collect"] is not None:
            collected = core.CounterMetricFamily("mnist_edge_collected_samples", "Labelled samples written to the folder.")
            collected.add_metric([], live["collect"]["collected"])
            yield collected
            kept = core.GaugeMetricFamily("mnist_edge_collect_folder", "Samples kept in the folder, and their bytes.",
                                          labels=("unit",))
            kept.add_metric(["samples"], live["collect"]["kept"])
            kept.add_metric(["bytes"], live["collect"]["bytes"])
            yield kept


def drift_metrics(figures):
    """The label-free drift figures (edge_runtime.drift.LiveHistogram.snapshot) as metric families."""
    distance = core.GaugeMetricFamily(
        "mnist_edge_drift_distance",
        "Total variation distance between the top-1 probability histogram of the last predicted images and the test set's (0..1).")
    if figures["distance"] is not None:
        distance.add_metric([], figures["distance"])
    yield distance
    threshold = core.GaugeMetricFamily("mnist_edge_drift_threshold", "Drift distance above which the service warns.")
    threshold.add_metric([], figures["threshold"])
    yield threshold
    images = core.GaugeMetricFamily("mnist_edge_drift_window_images", "Predicted images the drift distance is over.")
    images.add_metric([], figures["images"])
    yield images
    above = core.GaugeMetricFamily(
        "mnist_edge_drift_above_threshold",
        "1 while the drift distance is above its threshold with at least the minimum count of images in the window.")
    above.add_metric([], int(figures["drifted"]))
    yield above


def add_proportion(family, labels, figure):
    """Add a proportion's estimate and interval to `family` (nothing when it has no trials yet)."""
    if figure["value"] is None:
        return
    family.add_metric([*labels, "estimate"], figure["value"])
    family.add_metric([*labels, "low"], figure["interval"][0])
    family.add_metric([*labels, "high"], figure["interval"][1])
