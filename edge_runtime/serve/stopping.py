"""How `serve` stops: on SIGTERM or Ctrl-C, finish what was accepted, within a bounded time.

waitress's own stop drops every connection at once, so each `systemctl restart` cut the uploads in
flight. Here the first signal closes the listening sockets and closes idle keep-alive connections;
the requests already on a connection (being received, queued for a worker, or running) go on, and
their answers carry `Connection: close`. At the deadline, a request no worker has started gets a
503 (a client may retry it elsewhere); then the process exits with status 0. A request a worker is
still running at that point gets up to three more seconds (a large photo takes a Pi about one),
since its answer cannot be replaced safely while the worker writes it; after that it is cut. A second signal ends the process at once (128 + the signal's number).
"""

import os
import signal
import socket
import sys
import time

import waitress.channel
import waitress.server
import waitress.task
import waitress.utilities
from waitress import wasyncore

LAST_ANSWERS_SECONDS = 3.0  # after the deadline: for running requests to end and answers to go out
LOOP_SECONDS = 0.2  # how often the drain looks at the connections


class ShuttingDown(waitress.utilities.Error):
    """What a request gets when the server stops before it could be answered."""

    code = 503
    reason = "Service Unavailable"


class Stop:
    """The stop state one server shares with its channels: whether a stop was asked, and when."""

    def __init__(self):
        self.signals = []
        self.wake = None  # called from the signal handler to end the event loop's wait at once

    @property
    def requested(self):
        return bool(self.signals)

    def on_signal(self, signal_number, frame):
        self.signals.append(signal_number)
        if len(self.signals) > 1:
            print(f"mnist-edge serve: {signal.Signals(signal_number).name} again: stopping at once",
                  file=sys.stderr, flush=True)
            os._exit(128 + signal_number)
        if self.wake is not None:
            self.wake()

    def install(self):
        for signal_number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signal_number, self.on_signal)


def task_class(stop):
    """waitress's WSGI task, with `Connection: close` on every answer once a stop was asked: a client
    must not send its next request on a connection that is about to close."""

    class ClosingWhenStopping(waitress.task.WSGITask):
        def build_response_header(self):
            if stop.requested and not self.close_on_finish:
                if hasattr(self, "set_close_on_finish"):  # waitress 3
                    self.set_close_on_finish()
                else:  # waitress 2.1 (Debian bookworm's python3-waitress)
                    self.response_headers.append(("Connection", "close"))
                    self.close_on_finish = True
            return super().build_response_header()

    return ClosingWhenStopping


def serve_until_stopped(server, stop, grace_seconds, log):
    """Run `server` (a waitress server) until `stop` is requested, then drain it; return 0."""
    socket_map = server_map(server)
    listeners = [dispatcher for dispatcher in socket_map.values()
                 if isinstance(dispatcher, waitress.server.BaseWSGIServer)]
    stop.wake = listeners[0].pull_trigger
    use_poll = listeners[0].adj.asyncore_use_poll
    while not stop.requested:
        wasyncore.loop(timeout=listeners[0].adj.asyncore_loop_timeout, map=socket_map, use_poll=use_poll, count=1)
    for listener in listeners:
        # The listening socket only; the server object also owns the trigger the loop still needs.
        wasyncore.dispatcher.close(listener)
    deadline = time.monotonic() + grace_seconds
    pending = busy_channels(socket_map)
    log(f"{signal.Signals(stop.signals[0]).name}: no new connections; finishing {len(pending)} request(s) "
        f"within {grace_seconds:g} s")
    while time.monotonic() < deadline and pending:
        wasyncore.loop(timeout=LOOP_SECONDS, map=socket_map, use_poll=use_poll, count=1)
        pending = busy_channels(socket_map)
    refused = refuse_unstarted(server, socket_map) if pending else 0
    last = time.monotonic() + LAST_ANSWERS_SECONDS
    while time.monotonic() < last and (busy_channels(socket_map) or unsent(socket_map)):
        wasyncore.loop(timeout=LOOP_SECONDS / 4, map=socket_map, use_poll=use_poll, count=1)
    cut = len(busy_channels(socket_map))
    # Idle workers end at once; one still running a cut request is named by waitress's own warning.
    server.task_dispatcher.shutdown(timeout=1.0)
    wasyncore.close_all(socket_map)
    log(f"stopped: {'every request answered' if not refused and not cut else f'{refused} answered 503'}"
        + (f", {cut} cut while running" if cut else ""))
    return 0


def server_map(server):
    """The socket map of a waitress server: one listener's own, or the shared one of several."""
    return server.map if hasattr(server, "map") else server._map


def channels(socket_map):
    return [dispatcher for dispatcher in list(socket_map.values())
            if isinstance(dispatcher, waitress.channel.HTTPChannel)]


def busy_channels(socket_map):
    """Connections with a request on them (arriving, queued, running, or sent and not yet read). Idle
    ones are closed on the way, once what they have to send is sent."""
    busy = []
    for channel in channels(socket_map):
        with channel.requests_lock:
            arriving = channel.request is not None and not channel.request.empty
            if channel.requests or arriving or has_unread_bytes(channel):
                busy.append(channel)
            elif not channel.will_close:
                channel.close_when_flushed = True
    return busy


def has_unread_bytes(channel):
    """Whether a request has reached the connection that the event loop has not read yet: one sent
    just before the signal is as accepted as one read just before it."""
    try:
        return bool(channel.socket.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except OSError:  # nothing waiting (BlockingIOError), or reset: nothing more will come
        return False


def unsent(socket_map):
    return any(channel.total_outbufs_len for channel in channels(socket_map))


def refuse_unstarted(server, socket_map):
    """Answer 503 on every connection whose request no worker has started; return how many."""
    dispatcher = server.task_dispatcher
    with dispatcher.lock:
        queued = list(dispatcher.queue)
        dispatcher.queue.clear()
    refused = 0
    for channel in channels(socket_map):
        with channel.requests_lock:
            waiting = channel in queued or (not channel.requests and channel.request is not None)
            if not waiting:
                continue
            version = next((request.version for request in [*channel.requests, channel.request]
                            if request is not None and request.headers_finished), "1.1")
            for request in channel.requests:
                request.close()
            channel.requests, channel.request = [], None
        answer = channel.parser_class(channel.adj)
        answer.version = version
        answer.error = ShuttingDown("the server is stopping; send the request again")
        task = channel.error_task_class(channel, answer)
        try:
            task.service()
        except waitress.channel.ClientDisconnected:
            continue
        channel.close_when_flushed = True
        refused += 1
    return refused
