"""The service as a plain WSGI application: routes, the token, limits, JSON errors and security headers.

    GET  /              the page (static files shipped in the wheel)
    GET  /api/info      model, sha256, backend, input shape, class names, accuracy, self-check
    POST /api/predict   an image file (image/*, or multipart field `file`) or JSON pixels
    POST /api/feedback  {"id": <a prediction's id>, "label": <the true class>}: the live checks
    GET  /healthz       the process is alive
    GET  /readyz        the start-up self-check passed, and live agreement holds if that gates (else 503)
    GET  /metrics       Prometheus text

A refused request gets a 4xx and {"error": "<one line>"}, the line the CLI would print. A 500 is
a bug in this service, never the user's input: it is logged with its traceback.
"""

from __future__ import annotations

import dataclasses
import hmac
import http
import importlib.resources
import json
import logging
import time
import urllib.parse
import uuid

from edge_runtime import errors, records
from edge_runtime.serve import bodies, model

LOGGER = logging.getLogger("mnist_edge.serve")
MAX_BATCH = 256
PREDICTION_IDS = "mnist_edge.prediction_ids"  # the environ key where predict leaves its ids for the access log
# The page's own files only: no inline script, nothing from elsewhere (the device may be offline).
SECURITY_HEADERS = [
    ("Content-Security-Policy",
     "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
     "media-src 'self' blob: mediastream:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
     "frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Permissions-Policy", "camera=(self), microphone=(), geolocation=()"),
]
STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """How the application answers: the bearer token (None: open), whether probes need it, the body limit."""

    token: str | None = None
    probes_need_token: bool = False
    max_body_bytes: int = bodies.DEFAULT_MAX_BODY_BYTES


@dataclasses.dataclass(frozen=True)
class Route:
    methods: tuple
    handler: object
    needs_token: bool


class Application:
    """The WSGI callable around a ServedModel, its start-up self_check.BundleCheck (None if skipped) and Metrics.

    `prediction_listeners` are called as listener(prepared, outcome, answer) after every
    prediction; the metrics are one, and checks that watch live traffic can be others.
    `access_log`, if given, is called with one line per request (see access_line).
    """

    def __init__(self, served, settings, metrics, self_check, live=None, access_log=None):
        self.served = served
        self.settings = settings
        self.metrics = metrics
        self.self_check = self_check
        self.live = live  # live.LiveChecks, or None
        self.access_log = access_log
        self.class_names = served.class_names
        self.prediction_listeners = [self.count_predictions] + ([live.after_prediction] if live else [])
        self.static = {path: (read_static(name), content_type) for path, (name, content_type) in STATIC_FILES.items()}
        api, probes = settings.token is not None, settings.token is not None and settings.probes_need_token
        self.routes = {path: Route(("GET", "HEAD"), self.static_file, False) for path in STATIC_FILES}
        self.routes.update({
            "/api/info": Route(("GET", "HEAD"), self.info, api),
            "/api/predict": Route(("POST",), self.predict, api),
            "/api/feedback": Route(("POST",), self.feedback, api),
            "/healthz": Route(("GET", "HEAD"), self.healthz, probes),
            "/readyz": Route(("GET", "HEAD"), self.readyz, probes),
            "/metrics": Route(("GET", "HEAD"), self.prometheus, probes),
        })

    @property
    def ready(self):
        return self.self_check is not None and self.self_check.passed and self.live_problem() is None

    def live_problem(self):
        return None if self.live is None else self.live.readiness_problem()

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        route = self.routes.get(path)
        try:
            if route is None:
                raise bodies.HTTPError(404, f"no such page or API: {path[:200]}")
            if method not in route.methods:
                raise bodies.HTTPError(405, f"{method[:20]} is not allowed on {path}; use {' or '.join(route.methods)}",
                                       headers=[("Allow", ", ".join(route.methods))])
            if route.needs_token:
                self.check_token(environ)
            status, headers, body = route.handler(environ)
        except bodies.HTTPError as error:
            status, headers, body = json_response(error.status, {"error": error.message}, error.headers)
        except errors.EdgeRuntimeError as error:  # the runtime refused the input: the CLI's own line
            status, headers, body = json_response(400, {"error": str(error)})
        except Exception:
            LOGGER.exception("error: %s %s failed", method, path)
            status, headers, body = json_response(500, {"error": "internal error; the service log has the details"})
        start_response(f"{status} {http.HTTPStatus(status).phrase}", headers + SECURITY_HEADERS)
        seconds = time.perf_counter() - started
        self.metrics.record_request(path if route else "other", status, seconds)
        # HEAD: the headers GET would send (Content-Length included), no body. waitress sends what it
        # is given, and a body here would be read as the start of the next answer on the connection.
        sent = b"" if method == "HEAD" else body
        if self.access_log is not None:
            self.access_log(access_line(environ, status, len(sent), seconds))
        return [sent] if sent else []

    def check_token(self, environ):
        scheme, _, presented = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), self.settings.token.encode()):
            raise bodies.HTTPError(401, "this service needs 'Authorization: Bearer <token>' (the token in its --token-file)",
                                   headers=[("WWW-Authenticate", 'Bearer realm="mnist-edge"')])

    def static_file(self, environ):
        body, content_type = self.static[environ.get("PATH_INFO") or "/"]
        return 200, [("Content-Type", content_type), ("Content-Length", str(len(body))),
                     ("Cache-Control", "no-cache")], body

    def info(self, environ):
        return json_response(200, {
            **self.served.describe(),
            "self_check": None if self.self_check is None else self.self_check.summary(),
            "ready": self.ready,
            "token_required": self.settings.token is not None,
            "max_body_bytes": self.settings.max_body_bytes,
            "live": None if self.live is None else self.live.snapshot(),
        })

    def healthz(self, environ):
        return json_response(200, {"alive": True})

    def readyz(self, environ):
        if self.ready:
            return json_response(200, {"ready": True})
        if self.self_check is None:
            reason = "the start-up self-check was skipped (--self-check-images 0)"
        elif not self.self_check.passed:
            reason = "; ".join(self.self_check.failures)
        else:
            reason = self.live_problem()
        return json_response(503, {"ready": False, "reason": reason})

    def prometheus(self, environ):
        body, content_type = self.metrics.exposition()
        return 200, [("Content-Type", content_type), ("Content-Length", str(len(body))),
                     ("Cache-Control", "no-store")], body

    def predict(self, environ):
        started = time.perf_counter()
        top_k = self.top_k(environ.get("QUERY_STRING", ""))
        body = bodies.read_body(environ, self.settings.max_body_bytes)
        kind = bodies.media_type(environ)
        if kind == "application/json":
            prepared = self.served.prepare_pixels(bodies.json_pixels(body), "pixels")
        elif kind == "multipart/form-data":
            filename, data = bodies.multipart_file(body, environ.get("CONTENT_TYPE", ""))
            prepared = self.served.prepare_file(data, printable_name(filename))
        elif kind.startswith("image/") or kind in ("application/octet-stream", ""):
            prepared = self.served.prepare_file(body, "upload")
        else:
            raise bodies.HTTPError(415, f"unsupported Content-Type {kind[:60]!r}: send image/*, multipart/form-data "
                                        "(field 'file') or application/json pixels")
        if len(prepared.names) > MAX_BATCH:
            raise bodies.HTTPError(400, f"pixels: a batch of {len(prepared.names)} images is more than the {MAX_BATCH} allowed")
        prepared_at = time.perf_counter()
        outcome = self.served.classify(prepared)
        answer = {
            "id": uuid.uuid4().hex,
            "model": self.served.model.path.name,
            "predictions": self.describe_predictions(prepared, outcome, top_k),
        }
        for listener in self.prediction_listeners:
            listener(prepared, outcome, answer)
        environ[PREDICTION_IDS] = [prediction["id"] for prediction in answer["predictions"]]
        answer["timing_ms"] = {
            "prepare": 1000 * (prepared_at - started),
            "model": 1000 * outcome.seconds,
            **answer.get("timing_ms", {}),  # a listener's own share, e.g. the shadow float model's
            "total": 1000 * (time.perf_counter() - started),
        }
        return json_response(200, answer)

    def feedback(self, environ):
        if self.live is None:
            raise bodies.HTTPError(404, "this service takes no feedback (it runs without live checks)")
        if bodies.media_type(environ) not in ("application/json", ""):
            raise bodies.HTTPError(415, 'feedback is JSON: {"id": "<prediction id>", "label": <class index or name>}')
        body = bodies.read_body(environ, min(self.settings.max_body_bytes, bodies.MAX_FEEDBACK_BYTES))
        return json_response(200, self.live.feedback(bodies.json_document(body)))

    def top_k(self, query):
        """The top_k of the query string, by the rule `predict --top-k` follows (records.check_top_k)."""
        values = urllib.parse.parse_qs(query).get("top_k", [str(records.DEFAULT_TOP_K)])
        try:
            return records.check_top_k(values[0])
        except errors.InputError as error:
            raise bodies.HTTPError(400, str(error)) from None

    def describe_predictions(self, prepared, outcome, top_k):
        """The records `predict --json` prints, with the id feedback names and the image as the page draws it."""
        pictures = model.picture_of(prepared.model_input)
        described = []
        for record, picture in zip(records.records(outcome.predictions, prepared.names, top_k), pictures):
            described.append({"id": uuid.uuid4().hex, **record.as_dict(), "input": picture.tolist()})
        return described

    def count_predictions(self, prepared, outcome, answer):
        for prediction in answer["predictions"]:
            self.metrics.record_prediction(prediction["class_name"])


def access_line(environ, status, body_bytes, seconds):
    """One request as the access log writes it: client, method, path, status, bytes, milliseconds and
    the prediction ids it made ("-" for none), e.g.
    `access 127.0.0.1 POST /api/predict 200 1234 B 8.1 ms id 6f1c…`."""
    ids = environ.get(PREDICTION_IDS) or ["-"]
    shown = ids[0] if len(ids) == 1 else f"{ids[0]} (+{len(ids) - 1} more)"
    def printable(text, limit):  # what a client sent, safe to write into the journal on one line
        return "".join(character for character in text if character.isprintable() and character != " ")[:limit] or "-"

    method = printable(environ.get("REQUEST_METHOD") or "-", 20)
    path = printable(environ.get("PATH_INFO") or "/", 200)
    return (f"access {environ.get('REMOTE_ADDR', '-')} {method} {path} {status} {body_bytes} B "
            f"{1000 * seconds:.1f} ms id {shown}")


def json_response(status, document, headers=()):
    body = (json.dumps(document, separators=(",", ":")) + "\n").encode()
    return status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                    ("Cache-Control", "no-store"), *headers], body


def printable_name(filename):
    """An uploaded file's name, safe to echo: its last path part, printable, at most 100 characters."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(character for character in name if character.isprintable())[:100]
    return name or "upload"


def read_static(name):
    return importlib.resources.files("edge_runtime.serve").joinpath("static").joinpath(name).read_bytes()
