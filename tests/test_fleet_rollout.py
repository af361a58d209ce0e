"""The rollout in waves for real: `ansible-playbook deploy/ansible/rollout.yml` against three hosts.

The three hosts are on this machine (`ansible_connection: local`), each with its own install root,
service folder and serve port on loopback, so Ansible runs the role once per host, in waves. They
are the install tests' devices (tests/test_install.py), with the same signed bundles: `second` is
good, `gate_fails` claims a float accuracy its int8 model cannot match, and `third` passes the gate
but the canary is fed disagreeing images during its probation. Every host starts on `first`.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import threading

import pytest

from conftest import REPO_ROOT, require
from test_install import (WINDOW, Device, agreement_images, build_signed_bundle, bundles,  # noqa: F401  (fixtures)
                          dependencies, feed, first_installed, identity_of, keys)

PLAYBOOK = REPO_ROOT / "deploy" / "ansible" / "rollout.yml"
HOSTS = ("pi-canary", "pi-hall", "pi-shed")
PROBATION_SECONDS = 12


def inventory(devices, path):
    """An inventory in deploy/ansible/inventory.example.yml's format: the canary group, then one wave."""
    def host_vars(device):
        return {"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3",
                "mnist_edge_root": str(device.root), "mnist_edge_serve_port": device.port,
                "mnist_edge_command": [sys.executable, "-m", "edge_runtime"],
                "mnist_edge_restart_command": device.restart_command(),
                "mnist_edge_probation_seconds": PROBATION_SECONDS,
                "mnist_edge_install_options": ["--no-deps", "--extras", ""],
                "mnist_edge_environment": {"PYTHONPATH": str(device.dependencies), "TF_CPP_MIN_LOG_LEVEL": "3"}}

    canary, *rest = HOSTS
    document = {"all": {"children": {
        "canary": {"hosts": {canary: host_vars(devices[canary])}},
        "wave1": {"hosts": {name: host_vars(devices[name]) for name in rest}}}}}
    path.write_text(json.dumps(document, indent=2))  # JSON is YAML
    return path


def run_playbook(inventory_path, bundle, scratch):
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment.update(ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_LOCAL_TEMP=str(scratch / "local"),
                       ANSIBLE_REMOTE_TEMP=str(scratch / "remote"), ANSIBLE_HOME=str(scratch / "home"))
    return subprocess.Popen(["ansible-playbook", "-i", str(inventory_path), str(PLAYBOOK), "-e", f"bundle={bundle}"],
                            env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_the_canary_group_goes_first_wherever_the_inventory_lists_it(tmp_path):
    """Without a bundle the first host fails at once, and the rollout stops there: that host is the canary."""
    require(shutil.which("ansible-playbook"), "the rollout needs ansible-playbook (Debian's ansible)")
    local = {"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3"}
    document = {"all": {"children": {"wave1": {"hosts": {"pi-attic": local, "pi-hall": local}},
                                     "canary": {"hosts": {"pi-kitchen": local}}}}}
    path = tmp_path / "inventory.yml"
    path.write_text(json.dumps(document))
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment.update(ANSIBLE_NOCOLOR="1", ANSIBLE_LOCAL_TEMP=str(tmp_path / "local"), ANSIBLE_HOME=str(tmp_path / "home"))
    result = subprocess.run(["ansible-playbook", "-i", str(path), str(PLAYBOOK)], env=environment,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert set(recap(result.stdout)) == {"pi-kitchen"} and recap(result.stdout)["pi-kitchen"]["failed"] == 1
    assert "give the bundle: ansible-playbook ... -e bundle=artifacts/mnist-edge-bundle.tar.gz" in result.stdout


STAND_IN = REPO_ROOT / "tests" / "installer_stand_in.py"


@pytest.mark.slow  # five hosts in three waves: about 9 s on the loaded 2-core machine, too much for test-fast
def test_waves_of_the_example_inventory_and_a_failure_in_the_second_stops_the_third(tmp_path):
    """The example inventory's five hosts with a stand-in installer: waves of 1, 2 and 2, and an exit 4
    on pi-hall (second wave) ends the rollout after that wave: pi-shed and pi-attic are never installed."""
    require(shutil.which("ansible-playbook"), "the rollout needs ansible-playbook (Debian's ansible)")
    (tmp_path / "b.tar.gz").write_bytes(b"a bundle")
    (tmp_path / "b.tar.gz.sig").write_bytes(b"its signature")
    (tmp_path / "pi-hall").mkdir()
    (tmp_path / "pi-hall" / "exit-status").write_text("4")
    host_vars = {"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3",
                 "bundle": str(tmp_path / "b.tar.gz"), "mnist_edge_root": str(tmp_path) + "/{{ inventory_hostname }}",
                 "mnist_edge_command": [sys.executable, str(STAND_IN)]}
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment.update(ANSIBLE_NOCOLOR="1", ANSIBLE_LOCAL_TEMP=str(tmp_path / "local"), ANSIBLE_HOME=str(tmp_path / "home"))
    result = subprocess.run(["ansible-playbook", "-i", str(REPO_ROOT / "deploy" / "ansible" / "inventory.example.yml"),
                             str(PLAYBOOK), "-e", json.dumps(host_vars)], env=environment, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    waves = [sorted(set(re.findall(r"^ok: \[([\w-]+)\] =>", play, re.MULTILINE)))
             for play in result.stdout.split("PLAY [")[1:]]
    assert waves == [["pi-kitchen"], ["pi-garage", "pi-hall"]], result.stdout
    assert recap(result.stdout)["pi-hall"]["failed"] == 1 and recap(result.stdout)["pi-garage"]["failed"] == 0
    installed = sorted(path.parent.name for path in tmp_path.glob("*/installs.log"))
    assert installed == ["pi-garage", "pi-hall", "pi-kitchen"]
    assert "pi-hall: mnist-edge install exited 4: mnist-edge install: stand-in exits 4" in result.stdout
    arguments = (tmp_path / "pi-garage" / "installs.log").read_text().split()
    assert arguments[arguments.index("--service-url") + 1] == "http://127.0.0.1:8081"  # pi-garage's own port
    assert arguments[arguments.index("--service-unit") + 1] == "mnist-edge.service"  # no restart command: systemd


def finish(process, record):
    output, _ = process.communicate(timeout=600)
    record.write_text(output)
    return process.returncode, output


def recap(output):
    """The PLAY RECAP's counters per host: {'pi-canary': {'ok': 5, 'failed': 1, ...}}."""
    counters = {}
    for line in output.split("PLAY RECAP")[-1].splitlines()[1:]:
        if ":" in line:
            name, _, rest = line.partition(":")
            counters[name.strip()] = {key: int(value) for key, value in (item.split("=") for item in rest.split())}
    return counters


@pytest.mark.slow  # three rollouts, five installs with a real serve and probation: about 120 s with its fixtures
def test_a_rollout_in_waves_reaches_every_host_and_stops_at_a_canary_that_fails(
        tmp_path, keys, dependencies, bundles, first_installed, agreement_images, fixture_bundle):
    require(shutil.which("ansible-playbook"), "the rollout needs ansible-playbook (Debian's ansible)")
    agreeing, disagreeing = agreement_images
    require(len(disagreeing) >= 1, "the fixture's int8 and float models agree on every test image")
    third = build_signed_bundle(fixture_bundle, tmp_path / "third", keys, "2026-04-01T00:00:00+00:00")
    first, second = identity_of(bundles["first"]), identity_of(bundles["second"])
    devices = {}
    for name in HOSTS:
        devices[name] = Device(tmp_path / name, keys, dependencies)
        shutil.rmtree(devices[name].root)
        shutil.copytree(first_installed, devices[name].root, symlinks=True)
    path = inventory(devices, tmp_path / "inventory.yml")
    canary = devices[HOSTS[0]]
    try:
        # 1. A good bundle reaches every host, the canary first.
        returncode, output = finish(run_playbook(path, bundles["second"], tmp_path), tmp_path / "run-good.txt")
        assert returncode == 0, output
        assert all(counters["failed"] == 0 for counters in recap(output).values()) and set(recap(output)) == set(HOSTS)
        assert [device.status()["current"] for device in devices.values()] == [second] * 3
        order = [output.index(f"ok: [{name}] =>") for name in HOSTS]
        assert order == sorted(order), output  # the canary's wave ran before the others'
        assert f"mnist-edge install: installed {second}: ready for {PROBATION_SECONDS} s" in output

        # 2. A bundle eval refuses stops at the canary, which keeps its version; the others are not touched.
        returncode, output = finish(run_playbook(path, bundles["gate_fails"], tmp_path), tmp_path / "run-gate.txt")
        assert returncode == 2, output
        assert set(recap(output)) == {HOSTS[0]} and recap(output)[HOSTS[0]]["failed"] == 1, output
        assert "mnist-edge install exited 3: mnist-edge install: refused at the gate" in output
        assert "FAILED: model_int8.tflite: accuracy" in output
        statuses = [device.status() for device in devices.values()]
        assert [status["current"] for status in statuses] == [second] * 3
        assert statuses[0]["last"]["outcome"] == "refused-at-gate"
        assert [status["last"]["outcome"] for status in statuses[1:]] == ["installed"] * 2

        # 3. A bundle that passes the gate, fed disagreements on the canary during probation: rolled back there.
        old_service = canary.service_pid()
        process = run_playbook(path, third, tmp_path)
        fed = []

        def feed_the_new_version():
            if canary.serving(replacing=old_service) is not None:
                feed(canary, [*agreeing[:WINDOW - 1], disagreeing[0]])
                fed.append(WINDOW)

        feeding = threading.Thread(target=feed_the_new_version)
        feeding.start()
        returncode, output = finish(process, tmp_path / "run-rollback.txt")
        feeding.join()
        assert fed == [WINDOW], "the canary's new serve never answered, or a request to it failed"
        assert returncode == 2, output
        assert set(recap(output)) == {HOSTS[0]} and recap(output)[HOSTS[0]]["failed"] == 1, output
        assert (f"mnist-edge install exited 4: mnist-edge install: rolled back to {second}: int8-float agreement "
                f"95.00% over the last {WINDOW} shadowed requests is below serve's threshold 99.00%") in output
        statuses = [device.status() for device in devices.values()]
        assert [status["current"] for status in statuses] == [second] * 3
        assert statuses[0]["last"]["outcome"] == "rolled-back" and statuses[0]["rollbacks"] == 1
        assert [[version["identity"] for version in status["versions"]] for status in statuses[1:]] == [[first, second]] * 2
    finally:
        for device in devices.values():
            device.stop_service()
