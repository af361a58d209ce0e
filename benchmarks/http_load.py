"""Load for `mnist-edge serve`: a real server process on a free port, and N clients on keep-alive connections.

Used by benchmarks/bench_serve.py (requests/s, latency, time to ready) and the tests (every route,
no 5xx, no dropped connection, right answers). Standard library only.
"""

from __future__ import annotations

import dataclasses
import http.client
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
READY = re.compile(r"ready on http://([^/]+):(\d+)/")


@dataclasses.dataclass(frozen=True)
class Request:
    """One request to send: method, path, headers and body; `key` says what it is (e.g. its file)."""

    method: str
    path: str
    body: bytes = b""
    headers: tuple = ()
    key: object = None


@dataclasses.dataclass(frozen=True)
class Response:
    """What came back: status (None when the connection failed), body, seconds, the request's key."""

    index: int
    key: object
    status: int | None
    body: bytes
    seconds: float
    error: str | None = None


def run(host, port, requests, clients, timeout=30.0, on_response=None):
    """Send `requests` (a list of Request) from `clients` threads, each taking the next one in turn.

    A connection the server closes after answering (as it does after a 413) is reopened; a request
    that gets no HTTP response at all is recorded with status None and the error. `on_response`,
    if given, is called with each Response as it arrives (from the client threads).
    Returns: the list of Response, in request order.
    """
    results = [None] * len(requests)
    next_index = iter(range(len(requests)))
    lock = threading.Lock()

    def client():
        connection = None
        while True:
            with lock:
                index = next(next_index, None)
            if index is None:
                break
            request = requests[index]
            if connection is None:
                connection = http.client.HTTPConnection(host, port, timeout=timeout)
            started = time.perf_counter()
            try:
                connection.request(request.method, request.path, body=request.body, headers=dict(request.headers))
                reply = connection.getresponse()
                body = reply.read()
                response = Response(index, request.key, reply.status, body, time.perf_counter() - started)
                if reply.will_close:
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException) as error:
                response = Response(index, request.key, None, b"", time.perf_counter() - started,
                                    f"{type(error).__name__}: {error}")
                connection.close()
                connection = None
            results[index] = response
            if on_response is not None:
                on_response(response)
        if connection is not None:
            connection.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


class ServeProcess:
    """`python -m edge_runtime serve BUNDLE --port 0 ...` in a subprocess; a context manager.

    Attributes once started: `url` (http://127.0.0.1:PORT), `port`, `pid`, `ready_seconds` (from
    process start to the "ready on" line); `log` holds every line the server wrote to stderr so far.
    """

    def __init__(self, bundle, *flags, startup_timeout=180.0, cpus=None, launch=None):
        """`launch`, if given, is (argv, environment, cwd) of a ready-made serve command line (one that
        already asks for --port 0), used instead of this python's: pi-check starts serve on an emulated Pi."""
        if launch is None:
            self.command = [sys.executable, "-m", "edge_runtime", "serve", str(bundle), "--port", "0", *flags]
            if cpus is not None:
                self.command = ["taskset", "-c", cpus, *self.command]
            self.environment, self.cwd = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}, REPO_ROOT
        else:
            self.command, self.environment, self.cwd = launch
        self.startup_timeout = startup_timeout
        self.log = []
        self.process = None
        self.port = None

    def start(self):
        launched = time.perf_counter()
        self.process = subprocess.Popen(self.command, cwd=self.cwd, env=self.environment, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        ready = threading.Event()

        def read_log():
            for line in self.process.stderr:
                self.log.append(line.rstrip("\n"))
                match = READY.search(line)
                if match and self.port is None:
                    self.ready_seconds = time.perf_counter() - launched
                    self.port = int(match.group(2))
                    ready.set()
            ready.set()  # the process ended

        threading.Thread(target=read_log, daemon=True).start()
        deadline = time.monotonic() + self.startup_timeout
        while not ready.wait(0.1):
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"serve did not become ready in {self.startup_timeout} s:\n" + self.log_text())
        if self.port is None:
            self.process.wait(10)
            raise RuntimeError(f"serve exited with status {self.process.returncode}:\n" + self.log_text())
        return self

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self):
        return self.process.pid

    def rss_kib(self, field="VmRSS"):
        """The server's resident memory now (or `field="VmHWM"`: its peak so far), in KiB, from /proc."""
        with open(f"/proc/{self.pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith(f"{field}:"))

    def log_text(self):
        return "\n".join(self.log)

    def stop(self):
        """SIGTERM, as systemd stops it; return the exit status."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
