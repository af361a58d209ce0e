"""`mnist-edge serve` under load, bounded and on loopback: 16 clients, 10,000 requests, valid and bad mixed.

Needs: no 5xx, no connection dropped without an answer, every valid answer equal to the CLI's
label for the same file, and the server's RSS growing by at most 10 MiB from request 1,000 to the end.
"""

import json
import threading

import numpy as np
import pytest

from benchmarks import http_load
from conftest import run_cli
from serve_process import ServeProcess, make_bundle

pytestmark = pytest.mark.slow
CLIENTS = 16
REQUESTS = 10_000
BODY_LIMIT = 200_000
RSS_GROWTH_LIMIT_KIB = 10 * 1024


@pytest.fixture(scope="module")
def load_files(fixture_bundle, tmp_path_factory):
    """20 digit photos (PNG) with the CLI's labels for them, and the bad bodies to mix in."""
    from PIL import Image

    directory = tmp_path_factory.mktemp("load-files")
    bundle = make_bundle(fixture_bundle, directory / "bundle")
    with np.load(fixture_bundle / "test_set.npz") as archive:
        digits = archive["x_test"][:20]
    paths = []
    for index, digit in enumerate(digits):
        path = directory / f"digit{index:02d}.png"
        Image.fromarray(255 - digit).resize((112, 112)).save(path)
        paths.append(path)
    result = run_cli("-m", "edge_runtime", "predict", str(bundle / "model_int8.tflite"), *map(str, paths), "--json")
    assert result.returncode == 0, result.stderr
    labels = {entry["name"]: entry["label"] for entry in json.loads(result.stdout)["predictions"]}
    valid = [(path.read_bytes(), labels[str(path)]) for path in paths]
    png = valid[0][0]
    bad = {
        "truncated": (png[: len(png) // 3], "image/png", 400),
        "not an image": (b"%PDF-1.4 definitely not a picture\n" * 20, "image/png", 400),
        "oversized": (png * (BODY_LIMIT // len(png) + 1), "image/png", 413),
        "wrong JSON": (b'{"pixels": "seven"}', "application/json", 400),
        "broken JSON": (b'{"pixels": [[0, 0], ', "application/json", 400),
    }
    return bundle, valid, bad


def test_sixteen_clients_ten_thousand_requests(load_files):
    bundle, valid, bad = load_files
    rng = np.random.default_rng(12)
    requests, expected = [], []
    bad_names = sorted(bad)
    for _ in range(REQUESTS):
        if rng.random() < 0.75:
            body, label = valid[rng.integers(len(valid))]
            requests.append(http_load.Request("POST", "/api/predict", body, (("Content-Type", "image/png"),), key="valid"))
            expected.append((200, label))
        else:
            name = bad_names[rng.integers(len(bad_names))]
            body, content_type, status = bad[name]
            requests.append(http_load.Request("POST", "/api/predict", body, (("Content-Type", content_type),), key=name))
            expected.append((status, None))

    with ServeProcess(bundle, "--max-body-bytes", str(BODY_LIMIT), "--tolerance", "100", "--workers", "4") as server:
        rss_at = {}
        done = iter(range(1, REQUESTS + 1))
        lock = threading.Lock()

        def watch(response):
            with lock:
                count = next(done)
            if count == 1000:
                rss_at[1000] = server.rss_kib()

        responses = http_load.run("127.0.0.1", server.port, requests, CLIENTS, on_response=watch)
        rss_at["end"] = server.rss_kib()
        alive = http_load.run("127.0.0.1", server.port, [http_load.Request("GET", "/healthz")], 1)[0].status

    dropped = [response for response in responses if response.status is None]
    server_errors = [response for response in responses if response.status >= 500] if not dropped else []
    assert not dropped, f"{len(dropped)} dropped, e.g. {dropped[0].key}: {dropped[0].error}"
    assert not server_errors, f"{len(server_errors)} 5xx, e.g. {server_errors[0].body[:200]}"
    wrong = []
    for response, (status, label) in zip(responses, expected):
        if response.status != status:
            wrong.append((response.key, response.status, response.body[:120]))
        elif label is not None and json.loads(response.body)["predictions"][0]["label"] != label:
            wrong.append((response.key, "label", json.loads(response.body)["predictions"][0]["label"], label))
    assert not wrong, f"{len(wrong)} unexpected answers, e.g. {wrong[:3]}"
    growth = rss_at["end"] - rss_at[1000]
    print(f"RSS at request 1,000: {rss_at[1000] / 1024:.1f} MiB, at the end: {rss_at['end'] / 1024:.1f} MiB; "
          f"{sum(r.key == 'valid' for r in responses)} valid, p50 {1000 * np.median([r.seconds for r in responses]):.1f} ms")
    assert growth <= RSS_GROWTH_LIMIT_KIB, f"RSS grew by {growth / 1024:.1f} MiB between request 1,000 and the end"
    assert alive == 200
    assert "Traceback" not in server.log_text()
