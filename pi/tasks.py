"""What pi-check runs: the files every run reads, the command line of each run, and running it.

Every run is `python -m edge_runtime …` with the same arguments on the device and on x86; only the
python (the venv) and the directory its raw outputs go to differ. x86 twins that would run the very
same command (the same numpy engine pass asked for by two rows) run once.
"""

import hashlib
import json
import os
import pathlib
import shutil
import time

import numpy as np

from pi import device as device_module, platforms
from pi.device import log

BUNDLE = device_module.BUNDLE
BENCH_IMAGES = 256
# On a subset, the drop against the float model's whole-test-set accuracy means nothing: eval's
# own check is switched off there, and equality with x86 is what pi-check checks.
SUBSET_TOLERANCE = "--tolerance 100"
# The x86 LiteRT reference-kernel outputs on the whole test set, which every numpy engine run must equal.
X86_REFERENCE = platforms.Run("reference", "litert", "x86", "litert", platforms.FULL)


def write_digit_images(test_set, directory):
    """PNG photos of real MNIST test digits as a user has them: dark ink on light paper, 4× size, a margin.

    Returns {file name: true label}, one image per class in the test set (its first test image).
    """
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    with np.load(test_set) as archive:
        images, labels = archive["x_test"], archive["y_test"]
    truth = {}
    for label in np.unique(labels):
        index = int(np.flatnonzero(labels == label)[0])
        ink = Image.fromarray(255 - images[index]).resize((112, 112), Image.BICUBIC)
        sheet = Image.new("L", (160, 150), 255)
        sheet.paste(ink, (20, 14))
        name = f"digit-{index:05d}.png"
        sheet.save(directory / name)
        truth[name] = int(labels[index])
    return truth


def make_layout(directory, bundle_dir, image_counts):
    """The files runs read besides the bundle: the int8 model alone, test subsets, the bench set, digits.

    Written into `directory` (the x86 scratch directory); copied to each device's home by copy_layout.
    Returns {PNG name: true label}.
    """
    with np.load(bundle_dir / "test_set.npz") as archive:
        images, labels = archive["x_test"], archive["y_test"]
    for count in sorted(set(image_counts) | {BENCH_IMAGES}):
        if count < len(labels):
            np.savez_compressed(directory / f"test-{count}.npz", x_test=images[:count], y_test=labels[:count])
    int8_only = directory / "int8-only"
    int8_only.mkdir(exist_ok=True)
    for name in ("model_int8.tflite", "manifest.json", "test_set.npz"):
        shutil.copy(bundle_dir / name, int8_only / name)
    return write_digit_images(bundle_dir / "test_set.npz", directory / "digits")


def copy_layout(home, bundle_tarball, scratch, locks):
    """Lay out what the device user has in `home` (emptied first): the bundle tarball, lock files, test files."""
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    shutil.copy(bundle_tarball, home / f"{BUNDLE}.tar.gz")
    for lock in locks:
        shutil.copy(device_module.HERE / lock, home / lock)
    for source in scratch.iterdir():
        if source.name == "digits":
            shutil.copytree(source, home / source.name)
        elif source.name.startswith("test-") and source.suffix == ".npz":
            shutil.copy(source, home / source.name)


def arguments_for(run, outputs):
    """The environment prefix and `python -m edge_runtime` arguments of a run; raw outputs go to `outputs`."""
    backend = f" --backend {run.backend}" if run.backend else ""
    subset = "" if run.images >= platforms.FULL else f" --test-set test-{run.images}.npz {SUBSET_TOLERANCE}"
    if run.kind in ("eval", "reference"):
        target = f"{BUNDLE}/" if run.target == "bundle" else "int8-only/model_int8.tflite --allow-missing"
        environment = "MNIST_EDGE_TFLITE_KERNELS=reference " if run.kind == "reference" else ""
        # One interpreter thread: the results are the same, and two emulated runs share two cores
        # without qemu's threads contending.
        return environment, f"eval {target}{backend}{subset} --threads 1 --json --save-outputs {outputs}"
    if run.kind == "predict":
        return "", f"predict int8-only/model_int8.tflite digits/{backend} --json"
    if run.kind == "serve":
        # `exec`: the server is the process that SIGTERM reaches, as under systemd.
        return "exec ", (f"serve {BUNDLE}/ --port 0 --self-check-images {run.images}{backend} --threads 1")
    if run.kind == "bench":
        return "", f"bench {BUNDLE}/model_int8.tflite{backend} --runs 20 --test-set test-{BENCH_IMAGES}.npz --json"
    raise ValueError(f"unknown run kind {run.kind!r}")


def twin_key(run, x86_python):
    """Runs with equal twin keys are the same x86 command: it runs once."""
    environment, arguments = arguments_for(run, "OUT")
    return hashlib.sha256(f"{x86_python}\n{environment}{arguments}".encode()).hexdigest()[:12]


def execute(run, runner, python, outputs, install_bundles=None):
    """Run `run` with `runner` (a Device or X86) and `python`; return its record.

    The record: key, cpu, seconds, exit status, the parsed --json output, whether XNNPACK was
    active, the outputs directory (relative to the runner's home), and the last stderr line on failure.
    `install_bundles`: pi/install_bundles.py's output directory, for an "install" run (device only).
    """
    if run.kind == "serve":
        return serve_and_query(run, runner, python)
    if run.kind == "install":
        return install_three(run, runner, python, install_bundles)
    environment, arguments = arguments_for(run, outputs)
    result = runner.run(f"{environment}{python} -m edge_runtime {arguments}", run.cpu)
    record = {"key": run.key, "cpu": run.cpu, "seconds": round(result.seconds, 1), "status": result.returncode,
              "xnnpack": "XNNPACK delegate" in result.stderr, "outputs": outputs, "json": None}
    if result.returncode != 0:
        record["error"] = device_module.last_line(result)
        return record
    try:
        record["json"] = json.loads(result.stdout)
    except ValueError:
        record["status"] = -1
        record["error"] = f"not JSON on stdout: {result.stdout[:200]!r}"
    return record


def load_outputs(home, record, model, backend):
    """The raw outputs a run saved for (model, backend), or None when the file is missing."""
    path = pathlib.Path(home) / record["outputs"] / f"{model}.{backend}.npy"
    return np.load(path) if path.is_file() else None


def serve_and_query(run, runner, python):
    """Start `serve` with `runner` (Device or X86), ask it from this machine over loopback, stop it with SIGTERM.

    The device's chroot shares this machine's network, so its 127.0.0.1 is ours. Asked: /readyz,
    /api/info (the model's sha256, the backend, the self-check), every PNG photo of the layout's
    digits/ posted as image/png to /api/predict, and /metrics. The record's json holds the answers:
    {"ready_seconds", "readyz", "info", "labels": {file: label}, "statuses": {file: HTTP status},
    "metrics_predictions": the predictions /metrics counted, "exit": the status after SIGTERM}.
    """
    import http.client
    import re

    from benchmarks.http_load import ServeProcess

    prefix, arguments = arguments_for(run, None)
    launch = runner.launch(f"{prefix}{python} -m edge_runtime {arguments}", run.cpu)
    record = {"key": run.key, "cpu": run.cpu, "status": 0, "xnnpack": False, "outputs": None, "json": None}
    server = ServeProcess(None, launch=launch, startup_timeout=1200)
    started = time.monotonic()

    def ask(method, path, body=None, headers=None):
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    try:
        server.start()
        answers = {"ready_seconds": round(server.ready_seconds, 1), "labels": {}, "statuses": {}}
        answers["readyz"] = ask("GET", "/readyz")[0]
        answers["info"] = json.loads(ask("GET", "/api/info")[1])
        for photo in sorted((pathlib.Path(runner.home) / "digits").glob("*.png")):
            status, body = ask("POST", "/api/predict", photo.read_bytes(), {"Content-Type": "image/png"})
            answers["statuses"][photo.name] = status
            if status == 200:
                answers["labels"][photo.name] = json.loads(body)["predictions"][0]["label"]
        metrics = ask("GET", "/metrics")[1].decode()
        counted = re.findall(r'^mnist_edge_predictions_total\{[^}]*\} ([0-9.e+]+)$', metrics, re.MULTILINE)
        answers["metrics_predictions"] = sum(float(value) for value in counted)
        record["json"] = answers
    except (OSError, RuntimeError, TimeoutError, ValueError, http.client.HTTPException) as error:
        record["status"] = -1
        record["error"] = f"{type(error).__name__}: {str(error)[-600:]}"
    finally:
        exit_status = server.stop()
        record["seconds"] = round(time.monotonic() - started, 1)
        record["xnnpack"] = "XNNPACK delegate" in server.log_text()
    if record["json"] is not None:
        record["json"]["exit"] = exit_status
    return record


# install runs ------------------------------------------------------------------------------------

INSTALL_ROOT = "mnist-edge-root"  # in the device's home: install's --root
SERVICE_FOLDER = "service"  # pi/service.py's folder: the service's pid and log
FEED_EXTRA = 5  # images posted beyond serve's agreement window
INSTALL_TIMEOUT = 1800  # seconds for one install under emulation (venv, pip, gate, probation)
OUTCOMES = ("good", "gate-fails", "falls-live")  # pi/install_bundles.py's names, in the order installed
# Between the first two, the falls-live bundle's install is killed (SIGKILL, from install's own
# checkpoint) in the middle of unpacking, on the device's file system: `current` must stay the good
# version, and the falls-live install after it must get through the half-unpacked version it left.
KILLED = ("killed-unpacking", "falls-live", "unpacking")  # (outcome name, bundle, install's checkpoint)


def free_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def install_command(run, python, port, name):
    """The device's `mnist-edge install` command line for the bundle `name`, and its service's command."""
    plan, home = run.plan, device_module.HOME
    root = f"{home}/{INSTALL_ROOT}"
    serve = (f"{root}/current/venv/bin/mnist-edge serve {root}/current/bundle --port {port} --threads 1 "
             f"--self-check-images {plan.self_check_images} --agreement-window {plan.window} {plan.serve_flags}").strip()
    restart = f"python3 {home}/service.py restart {home}/{SERVICE_FOLDER} -- {serve}"
    recipe = f"--extras '{plan.extras}'" + (" --system-site-packages" if plan.system_site_packages else "")
    return (f"{python} -m edge_runtime install ~/install-bundles/{name}/{BUNDLE}.tar.gz --root ~/{INSTALL_ROOT} "
            f"--trusted-keys ~/install-bundles/trusted-keys --gate-images {run.images} "
            f"--restart-command '{restart}' --service-url http://127.0.0.1:{port} "
            f"--probation-seconds {plan.probation_seconds:g} {recipe} --pip-option=--constraint={home}/{plan.lock}")


def feed_when_serving(port, sha256, images, finished):
    """Once serve answers /readyz 200 with the model `sha256`, POST each image as JSON pixels; return how many got 200.

    Gives up (returning what it posted) when `finished()` says the install ended first, or when
    that serve answers /readyz 503 (its self-check failed: nothing to feed).
    """
    import http.client

    def ask(method, path, body=None):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            connection.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    while not finished():
        try:
            status, body = ask("GET", "/api/info")
            if status == 200 and json.loads(body).get("sha256") == sha256:
                ready = ask("GET", "/readyz")[0]
                if ready == 503:
                    return 0
                if ready == 200:
                    break
        except (OSError, ValueError, http.client.HTTPException):
            pass
        time.sleep(0.5)
    else:
        return 0
    answered = 0
    for image in images:
        if finished():
            break
        try:
            status, _ = ask("POST", "/api/predict", json.dumps({"pixels": image.tolist()}).encode())
        except (OSError, http.client.HTTPException):
            break
        answered += status == 200
    return answered


def serving(port, sha256, timeout):
    """True once the service at `port` answers /readyz 200 and serves the model `sha256`, within `timeout` s."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=30) as response:
                same = json.loads(response.read()).get("sha256") == sha256
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=30) as response:
                if same and response.status == 200:
                    return True
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    return False


def install_outcome(run, device, python, port, name, bundle, images, environment=None):
    """One `mnist-edge install` on the device, fed while it runs; its record (exit, log lines, `current`, seconds).

    `environment`: variables for the install (MNIST_EDGE_INSTALL_KILL_AT to kill it at a checkpoint).
    """
    import subprocess
    import threading

    argv, variables, _ = device.launch(install_command(run, python, port, name), run.cpu, environment)
    started = time.monotonic()
    process = subprocess.Popen(argv, env=variables, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    fed = {"answered": 0}
    feeder = threading.Thread(target=lambda: fed.update(answered=feed_when_serving(
        port, bundle["int8_sha256"], images, lambda: process.poll() is not None)), daemon=True)
    feeder.start()
    try:
        _, stderr = process.communicate(timeout=INSTALL_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
        stderr += f"\npi-check: install of {name} timed out after {INSTALL_TIMEOUT} s"
    feeder.join(timeout=150)
    current = pathlib.Path(device.home) / INSTALL_ROOT / "current"
    return {"status": process.returncode, "seconds": round(time.monotonic() - started, 1),
            "lines": [line for line in stderr.splitlines() if line.startswith("mnist-edge install: ")],
            "last_stderr": (stderr.strip().splitlines() or ["no output"])[-1],
            "current": os.readlink(current) if current.is_symlink() else None,
            "identity": bundle["identity"], "fed": fed["answered"]}


def install_three(run, device, python, bundles_dir):
    """The install run: the three bundles of pi/install_bundles.py installed in order on the device,
    with one more install, killed while unpacking, after the first (see KILLED).

    Lays out ~/install-bundles (the signed tarballs, the trusted key), ~/service.py and the versions'
    lock, starts from an empty ~/mnist-edge-root, and stops the service however it ends. The record's
    json: {"outcomes": {name: install_outcome's record}, "status": `mnist-edge status --json` after,
    "serving_good_again": whether the service answered ready with the good version's model after the
    rollback, "port", "plan": the run's InstallPlan, "service_log": the service log's last lines}.
    """
    import dataclasses

    home, bundles_dir = pathlib.Path(device.home), pathlib.Path(bundles_dir)
    bundles = json.loads((bundles_dir / "bundles.json").read_text())
    for stale in ("install-bundles", INSTALL_ROOT, SERVICE_FOLDER):
        shutil.rmtree(home / stale, ignore_errors=True)
    (home / "install-bundles").mkdir()
    shutil.copy(bundles_dir / "trusted-keys", home / "install-bundles" / "trusted-keys")
    for name in OUTCOMES:
        (home / "install-bundles" / name).mkdir()
        for source in (pathlib.Path(bundles[name]["path"]), pathlib.Path(bundles[name]["path"] + ".sig")):
            shutil.copy(source, home / "install-bundles" / name / source.name)
    shutil.copy(device_module.HERE / "service.py", home / "service.py")
    shutil.copy(device_module.HERE / run.plan.lock, home / run.plan.lock)
    with np.load(home / BUNDLE / "test_set.npz") as archive:
        images = archive["x_test"][:run.plan.window + FEED_EXTRA]

    port = free_port()
    record = {"key": run.key, "cpu": run.cpu, "status": 0, "xnnpack": False, "outputs": None, "json": None}
    started = time.monotonic()
    outcomes = {}
    try:
        killed, killed_bundle, checkpoint = KILLED
        steps = [(OUTCOMES[0], OUTCOMES[0], None), (killed, killed_bundle, {"MNIST_EDGE_INSTALL_KILL_AT": checkpoint}),
                 *((name, name, None) for name in OUTCOMES[1:])]
        for name, bundle_name, environment in steps:
            outcomes[name] = install_outcome(run, device, python, port, bundle_name, bundles[bundle_name], images,
                                             environment)
            log(f"{device.name} install {name}: exit {outcomes[name]['status']} in {outcomes[name]['seconds']:.0f} s: "
                f"{(outcomes[name]['lines'] or [outcomes[name]['last_stderr']])[-1]}")
        # After the rollback the service was restarted on the good version: it must serve it again.
        again = serving(port, bundles["good"]["int8_sha256"], run.plan.probation_seconds)
        status = device.run(f"{python} -m edge_runtime status --root ~/{INSTALL_ROOT} --json", run.cpu, timeout=300)
        record["json"] = {"outcomes": outcomes, "port": port, "plan": dataclasses.asdict(run.plan),
                          "serving_good_again": again,
                          "status": json.loads(status.stdout) if status.returncode == 0 else None}
    except (OSError, ValueError, device_module.CheckFailed) as error:
        record["status"] = -1
        record["error"] = f"{type(error).__name__}: {str(error)[-600:]}"
    finally:
        device.run(f"python3 ~/service.py stop ~/{SERVICE_FOLDER}", run.cpu, timeout=300)
        record["seconds"] = round(time.monotonic() - started, 1)
        service_log = home / SERVICE_FOLDER / "service.log"
        if record["json"] is not None:
            record["json"]["service_log"] = (service_log.read_text(errors="replace").splitlines()[-40:]
                                             if service_log.is_file() else [])
    return record
