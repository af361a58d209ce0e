"""Prometheus metrics of the service, in a registry of its own, exposed at GET /metrics.

Labels stay bounded: routes are the known ones (anything else is "other"), statuses and classes
are few, so a scraping Prometheus and this process's memory both stay small under any traffic.
"""

import prometheus_client

# Request latency on a Pi runs from a fraction of a millisecond (pixels) to a second (a large photo).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Counters and gauges for one served model; `model`, `sha256` and `backend` label its facts."""

    def __init__(self, model, sha256, backend):
        self.registry = prometheus_client.CollectorRegistry()
        model_labels = ("model", "sha256", "backend")
        self.model_labels = {"model": model, "sha256": sha256 or "", "backend": backend}
        prometheus_client.ProcessCollector(registry=self.registry)
        self.model_info = prometheus_client.Gauge(
            "mnist_edge_model_info", "The served model: always 1, its facts are the labels.",
            model_labels, registry=self.registry)
        self.model_info.labels(**self.model_labels).set(1)
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
        }
        self.self_check = {
            name: prometheus_client.Gauge(f"mnist_edge_self_check_{name}", text, model_labels, registry=self.registry)
            for name, text in gauges.items()
        }

    def record_self_check(self, check):
        """Publish a SelfCheck (or None when it was skipped: passed 0, the rest absent)."""
        self.self_check["passed"].labels(**self.model_labels).set(0 if check is None else int(check.passed))
        if check is None:
            return
        for name in ("accuracy", "float_accuracy", "drop_points", "images"):
            value = getattr(check, name)
            if value is not None:
                self.self_check[name].labels(**self.model_labels).set(value)

    def record_request(self, route, status, seconds):
        self.requests.labels(route=route, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def record_prediction(self, class_name):
        self.predictions.labels(class_name=class_name).inc()

    def exposition(self):
        """Return (body bytes, content type) in Prometheus' text format."""
        return prometheus_client.generate_latest(self.registry), prometheus_client.CONTENT_TYPE_LATEST
