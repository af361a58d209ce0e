"""`mnist-edge install`, `status` and `rollback` for real: signed bundles built by export.bundle, a venv
per version, eval as the gate, a real `serve` restarted by pi/service.py (pi-check's stand-in for systemd), probation fed
with real requests, kill -9 at every step, two installs at once, and a full disk.

The bundles hold the small trained export checked in under tests/fixtures/bundle (conftest's
`fixture_bundle`): no TensorFlow, so these run in the device venv too (make test-device).
tests/test_install_proof.py does the same with fully trained models. Each version's venv gets the wheel with `--no-deps`, and its dependencies through
PYTHONPATH from this venv (a folder of links to its packages, mnist-edge left out): pip then
installs the version's own edge_runtime in a second, and the gate and serve run that copy.
"""

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO_ROOT, require
from serve_process import call_json

SERVICE_MANAGER = REPO_ROOT / "pi" / "service.py"  # no systemd here, as in pi-check's chroot
# Long enough for serve to start and the test to send its requests on a loaded machine (6 s was not).
PROBATION_SECONDS = 12
WINDOW = 20


@pytest.fixture(scope="module")
def dependencies(tmp_path_factory):
    """A folder of links to this venv's packages, without mnist-edge itself: the versions' PYTHONPATH."""
    site_packages = pathlib.Path(np.__file__).resolve().parent.parent
    folder = tmp_path_factory.mktemp("dependencies")
    for entry in site_packages.iterdir():
        if entry.name.startswith(("edge_runtime", "mnist_edge", "__editable__")) or entry.suffix == ".pth":
            continue
        (folder / entry.name).symlink_to(entry)
    return folder


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    from edge_runtime.install import signing

    folder = tmp_path_factory.mktemp("keys")
    signing.generate_key_pair(folder / "release")
    return folder


def build_signed_bundle(export, scratch, keys, created=None, manifest_changes=None):
    """A signed bundle tarball of `export` (copied into `scratch`); `created` makes it another version."""
    from edge_runtime.install import signing
    from export import bundle

    artifacts = scratch / "artifacts"
    shutil.copytree(export, artifacts)
    document = json.loads((artifacts / "manifest.json").read_text())
    if created:
        document["created"] = created
    for change in manifest_changes or ():
        change(document)
    (artifacts / "manifest.json").write_text(json.dumps(document, indent=2))
    path = bundle.build_bundle(artifacts, scratch / "mnist-edge-bundle.tar.gz")
    signing.sign_file(path, keys / "release")
    return path


@pytest.fixture(scope="module")
def bundles(fixture_bundle, tmp_path_factory, keys):
    """Three signed bundles: `first` and `second` (two exports of the same files), and `gate_fails`,
    whose manifest claims a float accuracy of 99.9% with no tolerance: eval refuses it."""
    def claim_too_much(document):
        document["source_model"]["test_accuracy"] = 0.999
        document["tolerances"]["int8_max_accuracy_drop_points"] = 0.0

    made = {}
    for name, created, changes in (("first", "2026-01-01T00:00:00+00:00", None),
                                   ("second", "2026-02-01T00:00:00+00:00", None),
                                   ("gate_fails", "2026-03-01T00:00:00+00:00", [claim_too_much])):
        made[name] = build_signed_bundle(fixture_bundle, tmp_path_factory.mktemp(name), keys, created, changes)
    return made


def identity_of(bundle):
    from edge_runtime.install import store

    return store.BundleArchive(bundle).identity


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Device:
    """One device: a root, its trusted keys, a service port and a stand-in service manager."""

    def __init__(self, folder, keys, dependencies):
        self.root = folder / "opt-mnist-edge"
        self.service = folder / "service"
        self.port = free_port()
        self.dependencies = dependencies
        self.root.mkdir(parents=True)
        shutil.copy(keys / "release.pub", self.root / "trusted-keys")

    @property
    def environment(self):
        # No REPO_ROOT on the path: the gate and serve must run each version's own installed copy.
        return {**{key: value for key, value in os.environ.items() if key != "PYTHONPATH"},
                "PYTHONPATH": str(self.dependencies), "TF_CPP_MIN_LOG_LEVEL": "3"}

    def restart_command(self):
        serve = self.root / "current" / "venv" / "bin" / "mnist-edge"
        return (f"{sys.executable} {SERVICE_MANAGER} restart {self.service} -- {serve} serve {self.root / 'current' / 'bundle'} "
                f"--port {self.port} --self-check-images 200 --agreement-window {WINDOW}")

    def command(self, *arguments, service=True):
        extra = ["--restart-command", self.restart_command(), "--service-url", f"http://127.0.0.1:{self.port}",
                 "--probation-seconds", str(PROBATION_SECONDS)] if service else []
        return [sys.executable, "-m", "edge_runtime", *arguments, "--root", str(self.root), *extra]

    def install(self, bundle, *options, service=True, kill_at=None, recipe=("--no-deps", "--extras", ""), timeout=300):
        environment = {**self.environment, **({"MNIST_EDGE_INSTALL_KILL_AT": kill_at} if kill_at else {})}
        return subprocess.run(self.command("install", str(bundle), *recipe, *options, service=service),
                              env=environment, capture_output=True, text=True, timeout=timeout)

    def start_install(self, bundle):
        return subprocess.Popen(self.command("install", str(bundle), "--no-deps", "--extras", ""), env=self.environment,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def status(self):
        result = subprocess.run([sys.executable, "-m", "edge_runtime", "status", "--root", str(self.root), "--json"],
                                env=self.environment, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def service_pid(self):
        try:
            return int((self.service / "service.pid").read_text())
        except (OSError, ValueError):
            return None

    def serving(self, replacing=None, timeout=120):
        """/api/info of the service once a process other than `replacing` (a pid) answers; None when none does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.service_pid() in (None, replacing):
                time.sleep(0.2)
                continue
            try:
                status, info = call_json(self, "GET", "/api/info")
                if status == 200:
                    return info
            except OSError:
                pass
            time.sleep(0.2)
        return None

    def stop_service(self):
        subprocess.run([sys.executable, str(SERVICE_MANAGER), "stop", str(self.service)], timeout=60)


@pytest.fixture
def device(tmp_path, keys, dependencies):
    made = Device(tmp_path, keys, dependencies)
    yield made
    made.stop_service()


@pytest.fixture(scope="module")
def first_installed(tmp_path_factory, keys, dependencies, bundles):
    """A root with the first bundle installed (no service), to copy: a venv made without pip moves
    with its folder when run as `venv/bin/python -m ...`, as the gate runs it."""
    made = Device(tmp_path_factory.mktemp("first-installed"), keys, dependencies)
    result = made.install(bundles["first"], service=False)
    assert result.returncode == 0, result.stderr
    return made.root


@pytest.fixture
def device_with_first(device, first_installed):
    shutil.rmtree(device.root)
    shutil.copytree(first_installed, device.root, symlinks=True)
    return device


@pytest.fixture(scope="module")
def agreement_images(fixture_bundle):
    """Test images where the fixture's int8 and float models agree, and where they do not."""
    from edge_runtime import Classifier

    with np.load(fixture_bundle / "test_set.npz") as archive:
        images = archive["x_test"]
    int8 = Classifier.load(fixture_bundle / "model_int8.tflite").predict(images).labels
    float_ = Classifier.load(fixture_bundle / "model_f32.tflite").predict(images).labels
    return images[int8 == float_], images[int8 != float_]


def feed(device, images):
    """POST each image as JSON pixels, one request each; every answer must be 200."""
    for image in images:
        status, _ = call_json(device, "POST", "/api/predict", {"pixels": image.tolist()})
        assert status == 200


def log_lines(result):
    return [line for line in result.stderr.splitlines() if line.startswith("mnist-edge install: ")]


@pytest.mark.slow  # two installs with a real serve and two probations: about 45 s
def test_install_switches_probation_passes_then_a_disagreeing_version_is_rolled_back(device, bundles, agreement_images):
    agreeing, disagreeing = agreement_images
    require(len(disagreeing) >= 1, "the fixture's int8 and float models agree on every test image")
    first, second = identity_of(bundles["first"]), identity_of(bundles["second"])

    installing = device.start_install(bundles["first"])
    info = device.serving()
    assert info is not None and info["sha256"] in (bundles["first"].parent / "artifacts" / "manifest.json").read_text()
    feed(device, agreeing[:WINDOW + 5])
    output, errors = installing.communicate(timeout=120)
    assert installing.returncode == 0, errors
    assert f"installed {first}: ready for {PROBATION_SECONDS} s; int8-float agreement 100.00% over the last {WINDOW} shadowed requests" in errors
    assert os.readlink(device.root / "current") == f"versions/{first}"

    old_service = device.service_pid()
    installing = device.start_install(bundles["second"])
    assert device.serving(replacing=old_service) is not None
    # Mostly agreeing traffic with one disagreement in the window: 95% < serve's 99%.
    feed(device, [*agreeing[:WINDOW - 1], disagreeing[0]])
    output, errors = installing.communicate(timeout=120)
    assert installing.returncode == 4, errors
    rolled = [line for line in errors.splitlines() if "rolled back to" in line]
    assert rolled == [f"mnist-edge install: rolled back to {first}: int8-float agreement 95.00% over the last "
                      f"{WINDOW} shadowed requests is below serve's threshold 99.00%"], errors
    assert os.readlink(device.root / "current") == f"versions/{first}"
    status = device.status()
    assert status["current"] == first and status["last"]["outcome"] == "rolled-back" and status["rollbacks"] == 1
    assert "95.00%" in status["last"]["reason"]
    assert [version["identity"] for version in status["versions"]] == [first, second]
    # The service runs the first version again, restarted after the rollback, and tells the fleet.
    assert device.serving(replacing=old_service) is not None
    assert "mnist_edge_rollbacks_total 1.0" in metrics_text(device).splitlines()


def metrics_text(device):
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{device.port}/metrics", timeout=30) as response:
        return response.read().decode()


@pytest.mark.slow  # builds signed bundles and venvs: about 20 s before the first
def test_a_failed_gate_leaves_current_untouched_with_evals_line(device_with_first, bundles):
    device = device_with_first
    result = device.install(bundles["gate_fails"], service=False)
    assert result.returncode == 3, result.stderr
    refused = [line for line in log_lines(result) if "refused at the gate" in line]
    assert len(refused) == 1 and "FAILED: model_int8.tflite: accuracy" in refused[0], result.stderr
    assert "below the float model's 99.90% (tolerance 0.00)" in refused[0]
    status = device.status()
    assert status["current"] == identity_of(bundles["first"])
    assert status["last"]["outcome"] == "refused-at-gate" and status["unfinished"] == []
    assert not (device.root / "versions" / identity_of(bundles["gate_fails"])).exists()


@pytest.mark.slow  # builds signed bundles and venvs: about 20 s before the first
def test_allow_unsigned_installs_and_says_so(device, bundles):
    unsigned = device.root.parent / "unsigned.tar.gz"
    shutil.copy(bundles["first"], unsigned)
    result = device.install(unsigned, "--allow-unsigned", service=False)
    assert result.returncode == 0, result.stderr
    assert log_lines(result)[0] == ("mnist-edge install: warning: --allow-unsigned: unsigned.tar.gz's signature is "
                                    "not checked (for development only)")


# Each install step, in order, and the options that make the install reach it: "rolled-back" is
# reached through a restart command that fails, "pruning" by keeping one version.
CHECKPOINTS = {"locked": (), "unpacking": (), "unpacked": (), "environment": (), "gated": (), "finished": (),
               "switching": (), "switched": (), "rolled-back": ("--restart-command", "false"),
               "pruning": ("--keep", "1")}


@pytest.mark.slow  # ten installs and ten re-installs: about 120 s
@pytest.mark.parametrize("checkpoint", CHECKPOINTS)
def test_kill_9_at_each_step_leaves_the_old_or_the_new_version_current(device_with_first, bundles, checkpoint):
    device = device_with_first
    first, second = identity_of(bundles["first"]), identity_of(bundles["second"])
    killed = device.install(bundles["second"], *CHECKPOINTS[checkpoint], service=False, kill_at=checkpoint)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    current = os.readlink(device.root / "current")
    expected = f"versions/{second}" if checkpoint in ("switched", "pruning") else f"versions/{first}"
    if checkpoint == "switching":  # the new link was made under a temporary name; not yet renamed
        assert list(device.root.glob(".current.*"))
    assert current == expected
    assert (device.root / current / "installed.json").is_file()  # a finished version, never a half one
    # The lock died with the process; the next install sweeps the leftovers and completes.
    again = device.install(bundles["second"], service=False)
    assert again.returncode == 0, again.stderr
    if checkpoint == "switched":  # the switch was made, probation never ran: the next install runs it
        assert f"{second} is current, but its install stopped before probation ended: resuming there" in again.stderr
    assert device.status()["last"]["outcome"] == "installed"
    assert os.readlink(device.root / "current") == f"versions/{second}"
    status = device.status()
    assert status["unfinished"] == [] and not list(device.root.glob(".current.*"))


@pytest.mark.slow  # builds signed bundles and venvs: about 20 s before the first
def test_a_second_install_at_the_same_time_refuses_in_one_line(device, bundles):
    from edge_runtime.install import store

    with store.Store(device.root).locked():
        result = device.install(bundles["first"], service=False)
    assert result.returncode == 75
    assert result.stderr.count("\n") == 2  # the signature line, then the refusal
    assert "another install or rollback is running (pid " in result.stderr.splitlines()[-1]
    assert not (device.root / "current").exists()


@pytest.mark.slow  # three installs: about 25 s
def test_rollback_by_hand_and_pruning_keep_the_newest(device, bundles, fixture_bundle, keys, tmp_path):
    third = build_signed_bundle(fixture_bundle, tmp_path / "third", keys, "2026-04-01T00:00:00+00:00")
    for bundle in (bundles["first"], bundles["second"], third):
        result = device.install(bundle, "--keep", "2", service=False)
        assert result.returncode == 0, result.stderr
    status = device.status()
    assert [version["identity"] for version in status["versions"]] == [identity_of(bundles["second"]), identity_of(third)]
    result = subprocess.run(device.command("rollback", service=False), env=device.environment, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"rolled back to {identity_of(bundles['second'])} (by hand, from {identity_of(third)})" in result.stderr
    assert device.status()["current"] == identity_of(bundles["second"])


@pytest.mark.slow  # builds signed bundles and venvs: about 20 s before the first
def test_a_full_disk_is_refused_before_unpacking(device_with_first, bundles):
    require(os.geteuid() == 0 and shutil.which("mount"), "mounting a small tmpfs needs root")
    device = device_with_first
    small = device.root.parent / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(small)], check=True)
    try:
        shutil.copytree(device.root, small / "root", symlinks=True, ignore=shutil.ignore_patterns("venv"))
        device.root = small / "root"
        # With its dependencies a version needs about 250 MB more than its bundle: refused at once.
        result = device.install(bundles["second"], service=False, recipe=("--extras", "edge"))
        current = os.readlink(device.root / "current")
        versions = [path.name for path in (device.root / "versions").iterdir()]
    finally:
        subprocess.run(["umount", str(small)], check=True)
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: ") and "MB free, the install needs about" in result.stderr
    assert current == f"versions/{identity_of(bundles['first'])}"
    assert versions == [identity_of(bundles["first"])]


@pytest.mark.slow  # builds signed bundles and venvs: about 20 s before the first
def test_a_disk_that_fills_while_unpacking_removes_the_half_version(bundles, tmp_path, monkeypatch):
    require(os.geteuid() == 0 and shutil.which("mount"), "mounting a small tmpfs needs root")
    from edge_runtime.install import environment, installer, store

    # The estimate passes (as if another writer filled the disk after it), then the unpack runs out.
    monkeypatch.setattr(store, "check_free_space", lambda path, needed: None)
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], check=True)
    try:
        versions = store.Store(small / "root")
        archive = store.BundleArchive(bundles["first"])
        with pytest.raises(store.DiskFullError, match="no space left on device while unpacking; nothing was switched"):
            installer.prepare_version(archive, versions, environment.Recipe(no_deps=True), lambda line: None)
        left = list(versions.versions.iterdir())
    finally:
        subprocess.run(["umount", str(small)], check=True)
    assert left == []


@pytest.mark.slow  # builds signed bundles and venvs: about 20 s before the first
def test_a_restart_that_fails_after_the_switch_rolls_back(device_with_first, bundles):
    device = device_with_first
    result = subprocess.run(device.command("install", str(bundles["second"]), "--no-deps", "--extras", "",
                                           "--restart-command", "false", service=False),
                            env=device.environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 4, result.stderr
    assert log_lines(result)[-2:] == [
        f"mnist-edge install: rolled back to {identity_of(bundles['first'])}: restart (false) failed with status 1: no output",
        "mnist-edge install: warning: restart (false) failed with status 1: no output"]  # the restart after it
    assert device.status()["current"] == identity_of(bundles["first"])


@pytest.mark.slow  # an install with a real serve and a probation: about 20 s
def test_with_the_numpy_engine_alone_probation_checks_readiness_only(tmp_path, keys, dependencies, bundles, agreement_images):
    """As on an ARMv6 Pi: no interpreter installed, so no float model runs and nothing is shadowed."""
    numpy_only = tmp_path / "numpy-only"
    numpy_only.mkdir()
    for entry in dependencies.iterdir():
        if not entry.name.lower().startswith(("ai_edge_litert", "onnxruntime", "tensorflow", "tflite", "keras")):
            (numpy_only / entry.name).symlink_to(entry.resolve())
    device = Device(tmp_path / "device", keys, numpy_only)
    try:
        installing = device.start_install(bundles["first"])
        info = device.serving()
        assert info is not None and info["backend"] == "numpy" and info["live"]["reference"] is None
        feed(device, agreement_images[1][:5])  # disagreements of LiteRT's int8 and float: nothing to compare here
        _, errors = installing.communicate(timeout=120)
    finally:
        device.stop_service()
    assert installing.returncode == 0, errors
    assert errors.strip().splitlines()[-1] == (
        f"mnist-edge install: installed {identity_of(bundles['first'])}: ready for {PROBATION_SECONDS} s; no shadow "
        "agreement on this device (no float reference it can run): readiness checked only")


@pytest.mark.slow  # builds signed bundles and venvs: about 20 s before the first
def test_gate_images_runs_the_gate_on_the_first_n_test_images_against_the_float_reference_on_them(device_with_first, bundles):
    """`--gate-images N` is eval --images N: on a part of the set, the int8 model is held to the float
    reference run on the same images, not to the figures the manifest records for the whole set. So
    the bundle that claims 99.9% (refused on the whole set) passes on the first 200 images, where
    the fixture's int8 and float models agree."""
    device = device_with_first
    second = identity_of(bundles["gate_fails"])
    result = device.install(bundles["gate_fails"], "--gate-images", "200", service=False)
    assert result.returncode == 0, result.stderr
    lines = log_lines(result)
    assert f"mnist-edge install: gate: eval on {second} with its own environment, on the first 200 test images" in lines
    assert f"mnist-edge install: gate passed: eval's check holds for {second} on this device" in lines
    assert device.status()["current"] == second


@pytest.mark.slow  # an install with a real serve and a probation: about 20 s
def test_require_agreement_rolls_back_a_quiet_device_whose_window_never_fills(device_with_first, bundles):
    device = device_with_first
    result = device.install(bundles["second"], "--require-agreement")
    assert result.returncode == 4, result.stderr
    assert log_lines(result)[-1] == (
        f"mnist-edge install: rolled back to {identity_of(bundles['first'])}: --require-agreement: agreement not "
        f"judged: 0 of the {WINDOW} shadowed requests serve needs to judge")
    assert device.status()["current"] == identity_of(bundles["first"])
