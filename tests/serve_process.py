"""A real `mnist-edge serve` process for tests: started on a free loopback port, stopped afterwards.

The server is started with `--port 0`, so the kernel picks a free port and the server prints the
one it got in its "ready on" line; nothing races for a port number.
"""

import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import json

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
READY = re.compile(r"ready on http://([^/]+):(\d+)/")
BUNDLE_FILES = ("model_int8.tflite", "model_int8.onnx", "model_f32.tflite", "manifest.json")


def make_bundle(artifacts, destination, test_images=None, test_labels=None):
    """Copy an export's device files into `destination` (a bundle directory); return it.

    `test_images`/`test_labels`, if given, become its test_set.npz, and the manifest's entry for it
    is rewritten to describe them (as a new export would); otherwise the export's own is copied.
    """
    from edge_runtime import manifest

    destination = pathlib.Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    for name in (*BUNDLE_FILES, "test_set.npz"):
        shutil.copy(pathlib.Path(artifacts) / name, destination / name)
    if test_images is not None:
        np.savez_compressed(destination / "test_set.npz", x_test=test_images, y_test=test_labels)
        document = json.loads((destination / "manifest.json").read_text())
        document["files"]["test_set.npz"].update(sha256=manifest.sha256_of(destination / "test_set.npz"),
                                                 bytes=(destination / "test_set.npz").stat().st_size,
                                                 images=len(test_labels))
        (destination / "manifest.json").write_text(json.dumps(document, indent=2))
    return destination


class ServeProcess:
    """`python -m edge_runtime serve BUNDLE --port 0 ...` in a subprocess; a context manager.

    Attributes once started: `url` (http://127.0.0.1:PORT), `port`, `pid`; `log` holds every line
    the server wrote to stderr so far.
    """

    def __init__(self, bundle, *flags, startup_timeout=180.0, cpus=None):
        self.command = [sys.executable, "-m", "edge_runtime", "serve", str(bundle), "--port", "0", *flags]
        if cpus is not None:
            self.command = ["taskset", "-c", cpus, *self.command]
        self.startup_timeout = startup_timeout
        self.log = []
        self.process = None
        self.port = None

    def start(self):
        environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        self.process = subprocess.Popen(self.command, cwd=REPO_ROOT, env=environment, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        ready = threading.Event()

        def read_log():
            for line in self.process.stderr:
                self.log.append(line.rstrip("\n"))
                match = READY.search(line)
                if match and self.port is None:
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

    def rss_kib(self):
        """The server's resident memory now, in KiB (from /proc)."""
        with open(f"/proc/{self.pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))

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
