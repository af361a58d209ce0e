"""`mnist-edge serve` against the faults of issue 21, with a real server process, real signals and real
clients (curl and raw sockets): a stop that finishes the requests in flight, HEAD without a body, 413
before any `100 Continue`, a port already taken, a port scanner's request line, feedback by the
request's id."""

import concurrent.futures
import http.client
import io
import json
import shutil
import signal
import socket
import subprocess
import time

import numpy as np
import pytest

from conftest import require, run_cli
from serve_process import ServeProcess, make_bundle

BODY_LIMIT = 1_000_000
UPLOADS = 8


@pytest.fixture(scope="module")
def bundle(fixture_bundle, tmp_path_factory):
    return make_bundle(fixture_bundle, tmp_path_factory.mktemp("faults-bundle"))


@pytest.fixture(scope="module")
def big_png(fixture_bundle):
    """A 3000×3000 photo of a test digit, as a phone sends it: seconds of work for a Pi-sized worker."""
    from PIL import Image

    with np.load(fixture_bundle / "test_set.npz") as archive:
        digit = archive["x_test"][0]
    buffer = io.BytesIO()
    Image.fromarray(255 - digit).resize((3000, 3000), Image.BILINEAR).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(bundle):
    with ServeProcess(bundle, "--max-body-bytes", str(BODY_LIMIT), "--tolerance", "100", "--workers", "2") as process:
        yield process


def curl(*arguments):
    require(shutil.which("curl"), "needs curl (make system-deps installs it)")
    return subprocess.run(["curl", "--silent", "--show-error", "--max-time", "30", *arguments],
                          capture_output=True, text=True, timeout=60)


def read_all(connection):
    chunks = []
    while True:
        try:
            chunk = connection.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def upload(port, body):
    """POST one image on its own connection; (status, decoded JSON answer) or (None, the error)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request("POST", "/api/predict", body=body, headers={"Content-Type": "image/png"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    except (OSError, http.client.HTTPException) as error:
        return None, f"{type(error).__name__}: {error}"
    finally:
        connection.close()


def uploads_then_signals(process, body, signals, pause=0.3):
    """Start UPLOADS concurrent uploads, send `signals` to the server `pause` seconds after they went
    out (0.2 s apart); return the answers and the server's exit status."""
    with concurrent.futures.ThreadPoolExecutor(UPLOADS) as pool:
        answers = [pool.submit(upload, process.port, body) for _ in range(UPLOADS)]
        time.sleep(pause)
        for signal_number in signals:
            process.process.send_signal(signal_number)
            time.sleep(0.2)
        status = process.process.wait(60)
        return [answer.result() for answer in answers], status


def test_sigterm_finishes_every_accepted_request_then_exits_0(bundle, big_png):
    with ServeProcess(bundle, "--tolerance", "100", "--workers", "2", "--stop-seconds", "60") as process:
        answers, status = uploads_then_signals(process, big_png, [signal.SIGTERM])
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", process.port), timeout=5)
    assert [answer[0] for answer in answers] == [200] * UPLOADS, answers
    assert status == 0
    log = process.log_text()
    assert "SIGTERM: no new connections" in log and "stopped: every request answered" in log
    assert "still running" not in log  # no worker was cut
    assert "Traceback" not in log


def test_an_upload_half_sent_when_the_signal_comes_is_received_and_answered(bundle, big_png):
    with ServeProcess(bundle, "--tolerance", "100", "--stop-seconds", "60") as process:
        with socket.create_connection(("127.0.0.1", process.port), timeout=60) as connection:
            connection.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                               + f"Content-Length: {len(big_png)}\r\n\r\n".encode() + big_png[:len(big_png) // 2])
            time.sleep(0.5)
            process.process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            connection.sendall(big_png[len(big_png) // 2:])
            reply = read_all(connection)
        status = process.process.wait(60)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Connection: close" in head, head
    assert json.loads(body)["predictions"][0]["name"] == "upload"
    assert status == 0


def test_what_cannot_finish_in_time_gets_503_not_a_dropped_connection(bundle, big_png):
    with ServeProcess(bundle, "--tolerance", "100", "--workers", "1", "--stop-seconds", "0") as process:
        answers, status = uploads_then_signals(process, big_png, [signal.SIGTERM])
    statuses = [answer[0] for answer in answers]
    assert set(statuses) <= {200, 503}, answers  # None would be a connection closed without an answer
    assert 503 in statuses, answers
    refused = [body for code, body in answers if code == 503]
    assert all(body == {"error": "service unavailable: the server is stopping; send the request again"} for body in refused)
    assert status == 0
    assert f"{statuses.count(503)} answered 503" in process.log_text()


def test_a_second_signal_stops_at_once(bundle, big_png):
    with ServeProcess(bundle, "--tolerance", "100", "--workers", "1", "--stop-seconds", "600") as process:
        started = time.monotonic()
        _, status = uploads_then_signals(process, big_png, [signal.SIGTERM, signal.SIGTERM])
    assert status == 128 + signal.SIGTERM
    assert time.monotonic() - started < 60  # not the 600 s the first signal granted
    assert "SIGTERM again: stopping at once" in process.log_text()


@pytest.mark.parametrize("path", ["/", "/metrics", "/healthz"])
def test_head_answers_headers_only_and_the_connection_lives_on(server, path):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n"
                           "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        reply = read_all(connection)
    head, _, rest = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and int(dict(
        line.split(b": ", 1) for line in head.split(b"\r\n")[1:])[b"Content-Length"]) > 0
    assert rest.startswith(b"HTTP/1.1 200"), rest[:80]  # the next answer, not the HEAD's body
    assert json.loads(rest.partition(b"\r\n\r\n")[2]) == {"alive": True}


def test_head_with_curl_on_one_kept_alive_connection(server):
    result = curl("--verbose", "--head", f"{server.url}/", "--head", f"{server.url}/metrics")
    assert result.returncode == 0, result.stderr
    assert "Excess found" not in result.stderr
    assert "Re-using existing connection" in result.stderr or "Reusing existing" in result.stderr
    assert result.stdout.count("HTTP/1.1 200") == 2


def test_curl_gets_413_without_sending_the_body(server, tmp_path):
    body = tmp_path / "three-megabytes.png"
    body.write_bytes(b"\0" * 3_000_000)
    # curl's default for a body over 1 MB: `Expect: 100-continue`, then wait for the answer.
    result = curl("--verbose", "--output", str(tmp_path / "answer"), "--write-out", "%{http_code} %{size_upload}",
                  "-H", "Content-Type: image/png", "--data-binary", f"@{body}", f"{server.url}/api/predict")
    code, uploaded = result.stdout.split()
    assert code == "413" and int(uploaded) < 3_000_000, result.stderr[-2000:]
    assert "Expect: 100-continue" in result.stderr and "100 Continue" not in result.stderr.replace("Expect: 100-continue", "")
    assert json.loads((tmp_path / "answer").read_text()) == {
        "error": f"request body is over the {BODY_LIMIT:,}-byte limit"}


def test_a_raw_client_gets_413_not_100_continue(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                           b"Expect: 100-continue\r\nContent-Length: 5000000\r\n\r\n")
        reply = read_all(connection)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"100 Continue" not in reply


def test_a_body_within_the_limit_still_gets_100_continue(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                           b"Expect: 100-continue\r\nConnection: close\r\nContent-Length: 5\r\n\r\n")
        assert connection.recv(100).startswith(b"HTTP/1.1 100 Continue")
        connection.sendall(b"notes")
        reply = read_all(connection)
    assert reply.startswith(b"HTTP/1.1 400") and b"not an image" in reply


def test_a_port_scanners_request_line_gets_400_and_no_traceback(server):
    lines_before = len(server.log)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(b"GARBAGE\r\n\r\n")
        reply = read_all(connection)
    assert reply.startswith(b"HTTP/1.1 400") or reply.startswith(b"HTTP/1.0 400"), reply[:200]
    assert "error" in json.loads(reply.partition(b"\r\n\r\n")[2])
    assert upload(server.port, b"x")[0] == 400  # alive, and the log has caught up with the request above
    assert "Traceback" not in "\n".join(server.log[lines_before:])


def test_a_port_in_use_fails_in_one_line_before_the_self_check(bundle):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_cli("-m", "edge_runtime", "serve", str(bundle), "--port", str(port), timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [f"error: http://127.0.0.1:{port}/: cannot listen: address already in use "
                     "(another serve, or the mnist-edge systemd unit, holds it?)"], lines


def predict_json(port, pixels):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", "/api/predict", body=json.dumps({"pixels": pixels}),
                           headers={"Content-Type": "application/json"})
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


def feedback(port, document):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", "/api/feedback", body=json.dumps(document), headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_feedback_takes_the_requests_id_when_it_holds_one_prediction(server):
    answer = predict_json(server.port, np.zeros((28, 28)).tolist())
    assert answer["id"] != answer["predictions"][0]["id"]
    status, labelled = feedback(server.port, {"id": answer["id"], "label": 3})
    assert status == 200 and labelled["id"] == answer["predictions"][0]["id"] and labelled["label"] == 3
    assert feedback(server.port, {"id": answer["predictions"][0]["id"], "label": 3})[0] == 409  # the same one


def test_feedback_with_the_id_of_a_batch_says_which_id_is_wanted(server):
    answer = predict_json(server.port, np.zeros((2, 28, 28)).tolist())
    status, refused = feedback(server.port, {"id": answer["id"], "label": 3})
    assert status == 400
    assert refused["error"] == (f"{answer['id']} is the id of a request of 2 images: label each image by its own id "
                                "(predictions[i].id in the answer)")
    assert feedback(server.port, {"id": answer["predictions"][1]["id"], "label": 3})[0] == 200
