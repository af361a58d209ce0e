"""`mnist-edge serve`: the bundle's model as an HTTP service — JSON API, a page, metrics, a start-up gate.

Needs the `[serve]` extra (waitress, prometheus-client). Nothing here is imported by the other
commands, so `predict`'s cold start does not pay for it. Layout:

- `model.py`: the model behind the service and its float reference; the only module here that
  runs models (loading by manifest role, image preparation, the bundle check `eval` runs);
- `live.py`: the live checks — shadow agreement, feedback with a paired live accuracy (through
  `edge_runtime.statistics`, as compare), collection into a samples folder (`edge_runtime.samples`);
- `app.py`: the WSGI application (routes, token, limits, errors, security headers);
- `bodies.py`: reading request bodies (image bytes, multipart `file`, JSON pixels, feedback);
- `metrics.py`: Prometheus metrics;
- `server.py`: its settings (ServeConfig; the flags are parsed with every command's in cli/options.py),
  the start-up self-check (`edge_runtime.self_check`, as `eval`), waitress;
- `static/`: the page (HTML, JS, CSS), shipped in the wheel.
"""
