"""`mnist-edge serve`: the bundle's model as an HTTP service — JSON API, a page, metrics, a start-up gate.

Needs the `[serve]` extra (waitress, prometheus-client). Nothing here is imported by the other
commands, so `predict`'s cold start does not pay for it. Layout:

- `model.py`: the model behind the service; the only module here that calls into the rest of
  `edge_runtime` (loading, image preparation, the accuracy gate `eval` uses);
- `app.py`: the WSGI application (routes, token, limits, errors, security headers);
- `requests.py`: reading request bodies (image bytes, multipart `file`, JSON pixels);
- `metrics.py`: Prometheus metrics;
- `server.py`: options, the start-up self-check, waitress;
- `static/`: the page (HTML, JS, CSS), shipped in the wheel.
"""
