"""The systemd unit the bundle ships for `serve`: valid to systemd itself, not root, restarting on failure."""

import configparser
import shutil
import subprocess
import sys

from conftest import REPO_ROOT, require

UNIT = REPO_ROOT / "export" / "mnist-edge.service"
INSTALLED_COMMAND = "/opt/mnist-edge/current/venv/bin/mnist-edge"  # the version `mnist-edge install` made current


def read_unit(text):
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str
    parser.read_string(text)
    return parser


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    require(shutil.which("systemd-analyze"), "systemd-analyze is not installed")
    # verify checks that ExecStart's program exists: point it at this environment's mnist-edge.
    command = shutil.which("mnist-edge") or str(tmp_path / "mnist-edge")
    if not shutil.which("mnist-edge"):
        (tmp_path / "mnist-edge").write_text(f"#!{sys.executable}\nfrom edge_runtime.cli.main import main\nmain()\n")
        (tmp_path / "mnist-edge").chmod(0o755)
    text = UNIT.read_text()
    assert INSTALLED_COMMAND in text
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace(INSTALLED_COMMAND, command))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=120)
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if UNIT.name in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


def test_the_unit_runs_unprivileged_restarts_on_failure_and_takes_a_bundle_path():
    service = read_unit(UNIT.read_text())["Service"]
    assert service["DynamicUser"] == "yes" and "User" not in service
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "3"  # a failed self-check is not retried
    assert service["ExecStart"].startswith(f"{INSTALLED_COMMAND} serve ${{MNIST_EDGE_BUNDLE}}")
    assert "\nEnvironment=MNIST_EDGE_BUNDLE=/opt/mnist-edge/current/bundle\n" in UNIT.read_text()
    assert "--host 127.0.0.1" in UNIT.read_text()  # loopback unless the owner says otherwise
