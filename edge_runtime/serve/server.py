"""`mnist-edge serve BUNDLE`: check the model, then serve it with waitress.

Start-up order: bind the port (a port already taken fails at once, in one line), load the model
(checked against the manifest), run the bundle check on its test set (`edge_runtime.self_check`,
what `eval` runs), and only then listen. A failed check exits with status 3 and the lines `eval`
prints, unless --allow-failed-self-check (then /readyz answers 503). While serving, the live checks
(live.py) compare with the float model on live traffic; SIGTERM finishes what was accepted
(stopping.py). Its options are parsed and checked with every other command's, in
edge_runtime/cli/options.py.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import errno
import json
import pathlib
import socket
import sys
import time

from edge_runtime import errors
from edge_runtime.install import store
from edge_runtime.serve import bodies


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """Everything `serve` was asked to do; the command-line flags map onto it one to one."""

    target: pathlib.Path  # the bundle directory, or a model file in it
    host: str = "127.0.0.1"
    port: int = 8080
    backend: str | None = None
    threads: int = 1
    workers: int = 4
    token_file: pathlib.Path | None = None
    probes_need_token: bool = False
    max_body_bytes: int = bodies.DEFAULT_MAX_BODY_BYTES
    self_check_images: int | None = None
    tolerance: float | None = None  # None: the manifest's
    allow_failed_self_check: bool = False
    shadow_rate: float = 1.0  # see docs/serve.md: the float model costs about what int8 does per image
    agreement_window: int = 200
    min_agreement: float = 99.0  # percent
    unready_below_agreement: bool = False
    feedback_ids: int = 1000
    feedback_seconds: float = 600.0
    collect: pathlib.Path | None = None
    collect_max_samples: int = 10_000
    collect_max_bytes: int = 500_000_000
    drift_window: int = 500
    drift_threshold: float = 0.15
    drift_min_images: int = 200
    stop_seconds: float = 5.0  # on SIGTERM: time to finish the requests already accepted
    access_log: bool = True


def read_token(path):
    """The token in `path`, stripped; InputError naming the file when it is missing or empty."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise errors.InputError(f"{path}: cannot read the token file: {error}") from None
    if not token:
        raise errors.InputError(f"{path}: the token file is empty")
    return token


def is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def log(message):
    print(f"mnist-edge serve: {message}", file=sys.stderr, flush=True)


def main(config):
    """Run the service `config` (a ServeConfig) asks for until SIGTERM or Ctrl-C; return the exit status."""
    started = time.perf_counter()
    try:
        import waitress.server  # noqa: F401  (checked here, before the minute a self-check may take)

        from edge_runtime.serve import app, live, metrics, model, stopping
    except ImportError as error:
        raise errors.BackendUnavailableError(
            f"serve needs the [serve] extra ({error.name} is missing): pip install 'mnist-edge[serve]'") from None
    token = read_token(config.token_file) if config.token_file else None
    # The port first: a port already taken is said in one line before a self-check of a minute.
    sockets = listening_sockets(config.host, config.port)
    served = model.ServedModel.load(config.target, backend=config.backend, threads=config.threads)
    if served.reference_note:
        log(f"note: {served.reference_note}")
    description = served.describe()
    check = None
    if config.self_check_images == 0:
        log("self-check skipped (--self-check-images 0): /readyz answers 503")
    else:
        check = served.self_check(config.self_check_images, config.tolerance, threads=config.threads)
        give_back_free_memory()
        log(self_check_line(check))
        if not check.passed:
            for failure in check.failures:
                print(f"FAILED: {failure}", file=sys.stderr, flush=True)
            if not config.allow_failed_self_check:
                return errors.EXIT_FAILED_CHECK
            log("serving anyway (--allow-failed-self-check): /readyz answers 503")
    counters = metrics.Metrics(description["model"], description["sha256"], description["backend"],
                               description["manifest_sha256"])
    counters.record_self_check(check)
    checks = live_checks(config, served, live)
    counters.watch_live(checks.snapshot)
    install_root = store.root_of_bundle(served.bundle_dir)
    if install_root is not None:  # installed by `mnist-edge install`: its rollbacks are the fleet's business
        versions = store.Store(install_root)
        counters.watch_rollbacks(lambda: int(versions.read_state().get("rollbacks", 0)))
    application = app.Application(served, app.Settings(token=token, probes_need_token=config.probes_need_token,
                                                       max_body_bytes=config.max_body_bytes), counters, check, checks,
                                  access_log=log if config.access_log else None)
    if token is None and not is_loopback(config.host):
        log(f"warning: listening on {config.host} without --token-file: anyone who can reach this port can use the API")
    stop = stopping.Stop()
    server = create_server(application, config, sockets, stop)
    stop.install()  # before "ready": a supervisor may stop the service as soon as it reads that line
    for host, port in listening_addresses(server):
        log(f"ready on http://{format_host(host)}:{port}/ in {time.perf_counter() - started:.2f} s "
            f"({description['model']}, {description['backend']}, {config.workers} workers)")
    return stopping.serve_until_stopped(server, stop, config.stop_seconds, log)


def listening_sockets(host, port):
    """Bound TCP sockets for `host` and `port` (one per address the name has), not yet listening.

    Raises: InputError naming the address when it is taken, not this machine's, or not allowed.
    """
    try:
        addresses = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise errors.InputError(f"--host {host}: cannot resolve: {error.strerror}") from None
    sockets = []
    for family, kind, protocol, _, address in dict.fromkeys(addresses):
        bound = socket.socket(family, kind, protocol)
        try:
            bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                bound.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            bound.bind(address)
        except OSError as error:
            bound.close()
            for other in sockets:
                other.close()
            hint = {errno.EADDRINUSE: " (another serve, or the mnist-edge systemd unit, holds it?)",
                    errno.EACCES: " (ports below 1024 need privileges)"}.get(error.errno, "")
            raise errors.InputError(f"http://{format_host(address[0])}:{address[1]}/: cannot listen: "
                                    f"{(error.strerror or str(error)).lower()}{hint}") from None
        sockets.append(bound)
    return sockets


def live_checks(config, served, live):
    """The LiveChecks `config` asks for, after one log line saying what they do."""
    from edge_runtime import samples

    folder = None
    if config.collect is not None:
        folder = samples.SampleFolder(config.collect, config.collect_max_samples, config.collect_max_bytes)
    settings = live.LiveSettings(
        shadow_rate=config.shadow_rate, window=config.agreement_window, min_agreement=config.min_agreement / 100,
        unready_below=config.unready_below_agreement, id_count=config.feedback_ids, id_seconds=config.feedback_seconds,
        drift_window=config.drift_window, drift_threshold=config.drift_threshold,
        drift_min_images=config.drift_min_images)
    if served.reference is None:
        log("live checks: the bundle has no float reference this machine can run: no shadow agreement, "
            "feedback counts int8 accuracy only")
    else:
        log(f"live checks: shadow rate {config.shadow_rate:g} against {served.reference_name}, agreement threshold "
            f"{config.min_agreement:g}% over the last {config.agreement_window} shadowed images"
            + (" (and /readyz 503)" if config.unready_below_agreement else ""))
    checks = live.LiveChecks(served, settings, log, folder)  # logs its label-free drift line
    if folder is not None:
        log(f"collecting labelled inputs into {folder.directory} ({folder.count} there; at most "
            f"{folder.max_samples} samples and {folder.max_bytes:,} bytes, oldest out first)")
    return checks


def give_back_free_memory():
    """Hand the memory the self-check freed back to the system, where the C library allows it.

    The check's test images and outputs are freed when it returns, but glibc keeps freed heap
    pages for reuse, and the idle service would go on holding them (about 10 MiB after a full
    check). malloc_trim returns them; on a C library without it (musl) this does nothing.
    """
    import ctypes

    try:
        ctypes.CDLL(None).malloc_trim(0)  # the process's own symbols, the C library's among them
    except (OSError, AttributeError):
        pass


def self_check_line(check):
    """The log line of a self_check.BundleCheck of the served model."""
    result = check.results[0]
    drop = "-" if result.drop_points is None else f"{0.0 - result.drop_points:+.2f} pt"
    agreement = "-" if result.agreement_with_float is None else f"{100 * result.agreement_with_float:.2f}%"
    float_part = "no float figure" if result.float_accuracy is None else \
        f"the float model's {100 * result.float_accuracy:.2f}% {check.float_accuracy_source}"
    return (f"self-check {'passed' if check.passed else 'FAILED'}: {100 * result.accuracy:.2f}% on {result.images} "
            f"test images against {float_part}; change {drop}, agreement {agreement}, "
            f"tolerance {check.tolerance_points:.2f} pt, {check.seconds:.2f} s")


def create_server(application, config, sockets, stop):
    """A waitress server for `application` on `sockets` (bound, from listening_sockets), its errors
    answered in JSON like the application's own, its answers closing connections once `stop` is asked."""
    import waitress.server

    server = waitress.server.create_server(
        application, sockets=sockets, threads=config.workers, ident="mnist-edge",
        # waitress refuses a body of this many bytes or more from its Content-Length, before reading it.
        max_request_body_size=config.max_body_bytes + 1,
        clear_untrusted_proxy_headers=True,
    )
    channel_class = json_error_channel_class(application, stop)
    for dispatcher in [server, *getattr(server, "map", {}).values()]:
        if isinstance(dispatcher, waitress.server.BaseWSGIServer):
            dispatcher.channel_class = channel_class
    return server


def json_error_channel_class(application, stop):
    """A waitress channel whose own refusals (413, 400 for malformed HTTP...) are JSON one-liners too,
    counted in `application`'s metrics; no `100 Continue` before a refusal; answers that close the
    connection once `stop` is asked (see stopping.py)."""
    import waitress.channel
    import waitress.task

    from edge_runtime.serve import app, stopping

    class JsonErrorTask(waitress.task.ErrorTask):
        def execute(self):
            error = self.request.error
            if error.code == 413:
                message = f"request body is over the {application.settings.max_body_bytes:,}-byte limit"
            else:
                message = f"{error.reason.lower()}: {error.body}".splitlines()[0]
            body = (json.dumps({"error": message}) + "\n").encode()
            self.status = f"{error.code} {error.reason}"
            self.response_headers.extend([("Content-Type", "application/json"), *app.SECURITY_HEADERS])
            if hasattr(self, "set_close_on_finish"):  # waitress 3
                self.set_close_on_finish()
            else:  # waitress 2.1 (Debian bookworm's python3-waitress)
                self.response_headers.append(("Connection", "close"))
                self.close_on_finish = True
            self.content_length = len(body)
            self.write(body)
            # A request line that could not be parsed (a port scanner's "GARBAGE") has no path.
            path = getattr(self.request, "path", None)
            application.metrics.record_request(path if path in application.routes else "other", error.code, 0.0)
            if application.access_log is not None:
                environ = {"REQUEST_METHOD": getattr(self.request, "command", None) or "-", "PATH_INFO": path or "-",
                           "REMOTE_ADDR": self.channel.addr[0] if self.channel.addr else "-"}
                application.access_log(app.access_line(environ, error.code, len(body), 0.0))

    class RefusingBeforeContinue(waitress.channel.HTTPChannel.parser_class):
        def received(self, data):
            consumed = super().received(data)
            if self.error is not None:
                # Refused from its headers (a body over the limit): the client must not be told to
                # send the body, only why not. waitress would send `100 Continue` first.
                self.expect_continue = False
            return consumed

    class JsonErrorChannel(waitress.channel.HTTPChannel):
        error_task_class = JsonErrorTask
        task_class = stopping.task_class(stop)
        parser_class = RefusingBeforeContinue

    return JsonErrorChannel


def listening_addresses(server):
    if hasattr(server, "effective_listen"):
        return [(host, port) for host, port in server.effective_listen]
    return [(server.effective_host, server.effective_port)]


def format_host(host):
    return f"[{host}]" if ":" in str(host) else host
