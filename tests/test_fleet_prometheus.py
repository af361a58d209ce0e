"""The fleet alerts end to end: a real Prometheus on loopback scrapes three real `serve` processes listed
in an Ansible inventory (file_sd targets made by deploy/prometheus/targets.py), one device is fed
inverted digits, and the test reads the firing drift alert, then a device-down one, from Prometheus's
HTTP API. The rules are deploy/prometheus/alerts.yml with every `for:` cut to seconds."""

import contextlib
import json
import shutil
import socket
import subprocess
import time
import urllib.request

import numpy as np
import pytest

from benchmarks import http_load
from conftest import REPO_ROOT, require, run_cli
from serve_process import ServeProcess, make_bundle

pytestmark = pytest.mark.slow  # the trained model, three servers and a Prometheus
PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
DEVICES = ("pi-1", "pi-2", "pi-3")
WINDOW = 200


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_test_copy_of_the_fleet_config(directory, inventory):
    """deploy/prometheus's config and rules in `directory`, scraping and evaluating every second, each `for:` 2 s."""
    import yaml

    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["scrape_configs"][0]["scrape_timeout"] = "1s"
    config["scrape_configs"][0]["file_sd_configs"][0]["refresh_interval"] = "1s"
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "2s"
    (directory / "alerts.yml").write_text(yaml.safe_dump(rules))
    (directory / "inventory.yml").write_text(yaml.safe_dump(inventory))
    made = run_cli("-m", "deploy.prometheus.targets", str(directory / "inventory.yml"),
                   "--out", str(directory / "targets" / "fleet.json"))
    assert made.returncode == 0, made.stderr


@contextlib.contextmanager
def prometheus(directory):
    port = free_port()
    process = subprocess.Popen(
        ["prometheus", f"--config.file={directory / 'prometheus.yml'}", f"--storage.tsdb.path={directory / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(directory / "prometheus.log", "w"))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def api(base, path):
    """GET a Prometheus API path; the decoded `data`, or None while Prometheus is not up yet."""
    try:
        with urllib.request.urlopen(base + path, timeout=5) as response:
            return json.loads(response.read())["data"]
    except OSError:
        return None


def wait_for(condition, seconds, what, log_path):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"{what} not seen in {seconds} s; Prometheus' log ends:\n" + log_path.read_text()[-2000:])


def firing(base):
    """{(alert name, device)} of the alerts firing now (empty while Prometheus is not up yet)."""
    data = api(base, "/api/v1/alerts")
    if data is None:
        return set()
    return {(alert["labels"]["alertname"], alert["labels"].get("device")) for alert in data["alerts"]
            if alert["state"] == "firing"}


def firing_with(base, alert):
    """The firing set once it holds `alert`, else None."""
    now = firing(base)
    return now if alert in now else None


def test_prometheus_fires_drift_for_the_device_fed_inverted_digits_and_down_for_the_stopped_one(trained, tmp_path):
    require(shutil.which("prometheus"), "prometheus is missing (Debian package prometheus: make system-deps)")
    started = time.monotonic()
    bundle = make_bundle(trained, tmp_path / "bundle")
    with np.load(bundle / "test_set.npz") as archive:
        digits = archive["x_test"][:WINDOW]
    flags = ("--drift-window", str(WINDOW), "--drift-min-images", "100", "--self-check-images", "500")
    with contextlib.ExitStack() as stack:
        servers = {device: stack.enter_context(ServeProcess(bundle, *flags)) for device in DEVICES}
        inventory = {"all": {"vars": {"ansible_host": "127.0.0.1"}, "children": {
            "canary": {"hosts": {"pi-1": {"mnist_edge_serve_port": servers["pi-1"].port}}},
            "wave1": {"hosts": {device: {"mnist_edge_serve_port": servers[device].port} for device in DEVICES[1:]}}}}}
        write_test_copy_of_the_fleet_config(tmp_path, inventory)
        base = stack.enter_context(prometheus(tmp_path))
        log_path = tmp_path / "prometheus.log"
        targets = wait_for(lambda: (api(base, "/api/v1/targets") or {}).get("activeTargets"), 30, "targets", log_path)
        assert sorted(target["labels"]["device"] for target in targets) == list(DEVICES)

        def pixels(image):
            return http_load.Request("POST", "/api/predict", json.dumps({"pixels": image.tolist()}).encode(),
                                     (("Content-Type", "application/json"),))

        for device, images in (("pi-1", digits), ("pi-2", 255 - digits)):  # pi-3 gets no traffic
            responses = http_load.run("127.0.0.1", servers[device].port, [pixels(image) for image in images], 2)
            assert {response.status for response in responses} == {200}
        alerts = wait_for(lambda: firing_with(base, ("MnistEdgeDrift", "pi-2")), 40, "MnistEdgeDrift firing for pi-2",
                          log_path)
        # The MNIST-fed and the idle device stay quiet. Inverted digits may also part int8 from float
        # (MnistEdgeLiveAgreementLow for pi-2): the agreement window is full of pictures unlike training's.
        assert {device for _, device in alerts} == {"pi-2"}, alerts
        distances = {sample["metric"]["device"]: float(sample["value"][1])
                     for sample in api(base, "/api/v1/query?query=mnist_edge_drift_distance")["result"]}
        assert distances["pi-2"] > 0.5 and distances["pi-1"] < 0.15 and "pi-3" not in distances

        servers["pi-3"].stop()
        last = wait_for(lambda: firing_with(base, ("MnistEdgeDeviceDown", "pi-3")), 30,
                        "MnistEdgeDeviceDown firing for pi-3", log_path)
        assert ("MnistEdgeDrift", "pi-2") in last and {device for _, device in last} == {"pi-2", "pi-3"}
        assert {name for name, device in last if device == "pi-3"} == {"MnistEdgeDeviceDown"}
    print(f"firing: {sorted(last)}; drift distances as Prometheus scraped them: {distances}; "
          f"{time.monotonic() - started:.1f} s in all")
