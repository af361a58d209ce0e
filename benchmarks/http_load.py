"""A small HTTP load generator for `mnist-edge serve`: N clients, each on its own keep-alive connection.

Used by benchmarks/bench_serve.py (requests/s, latency) and tests/test_serve_load.py (no 5xx, no
dropped connection, right answers). Standard library only, so it runs wherever the server does.
"""

import dataclasses
import http.client
import threading
import time


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
