"""deploy/: the Prometheus config and alert rules through promtool (check and unit tests), the rules
against the metrics serve exports, and the file_sd targets made from the Ansible inventory."""

import json
import re
import shutil
import subprocess

import pytest

from conftest import REPO_ROOT, require, require_module, run_cli

PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
EXAMPLE_INVENTORY = REPO_ROOT / "deploy" / "ansible" / "inventory.example.yml"
# Metrics the rules read that serve does not export: Prometheus' own, and the install's (issue 18).
NOT_FROM_SERVE = {"up", "mnist_edge_rollbacks_total"}


def promtool(*arguments):
    require(shutil.which("promtool"), "promtool is missing (Debian package prometheus: make system-deps)")
    return subprocess.run(["promtool", *arguments], capture_output=True, text=True, timeout=60)


def require_yaml(what):
    """The fleet's files are YAML: PyYAML is in the workstation venv (the dev extra), not on a device."""
    require_module("yaml", what, "the workstation venv, the dev extra")


def rules():
    require_yaml("reading the alert rules")
    import yaml

    document = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_the_config_and_its_rules_pass_promtool_check():
    checked = promtool("check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 7 rules found" in checked.stdout + checked.stderr


def test_the_alert_unit_tests_pass_and_fail_when_a_rule_changes(tmp_path):
    tested = promtool("test", "rules", str(PROMETHEUS_DIR / "alerts_test.yml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # The same tests against rules whose drift threshold waits longer must fail: they can see a change.
    (tmp_path / "alerts.yml").write_text((PROMETHEUS_DIR / "alerts.yml").read_text().replace(
        "expr: mnist_edge_drift_above_threshold == 1\n        for: 15m", "expr: mnist_edge_drift_above_threshold == 1\n        for: 25m"))
    shutil.copy(PROMETHEUS_DIR / "alerts_test.yml", tmp_path / "alerts_test.yml")
    changed = promtool("test", "rules", str(tmp_path / "alerts_test.yml"))
    assert changed.returncode != 0 and "MnistEdgeDrift" in changed.stdout + changed.stderr


def test_every_alert_has_a_for_a_one_line_description_and_a_firing_and_a_quiet_unit_test():
    require_yaml("reading the alert rules' unit tests")
    import yaml

    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names)) == 7
    for rule in rules():
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        description = rule["annotations"]["description"]
        assert description and "\n" not in description, rule["alert"]
        own = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in own), f"{rule['alert']}: no firing case"
        assert any(not case["exp_alerts"] for case in own), f"{rule['alert']}: no quiet case"


def test_the_rules_read_metrics_that_serve_exports():
    source = (REPO_ROOT / "edge_runtime" / "serve" / "metrics.py").read_text()
    exported = set(re.findall(r'"(mnist_edge_[a-z0-9_]+)"', source))
    exported |= {f"mnist_edge_self_check_{name}" for name in re.findall(r'^\s+"([a-z_]+)": "', source, re.MULTILINE)}
    read = {name for rule in rules() for name in re.findall(r"\b(up|mnist_edge_[a-z0-9_]+)\b", rule["expr"])}
    assert read - NOT_FROM_SERVE <= exported, sorted(read - NOT_FROM_SERVE - exported)
    assert {"mnist_edge_drift_above_threshold", "mnist_edge_manifest_info", "mnist_edge_self_check_passed"} <= read


def test_targets_from_the_example_inventory_resolve_vars_as_ansible_does():
    require_yaml("reading the Ansible inventory")
    from deploy.prometheus import targets

    made = targets.file_sd_targets(targets.read_inventory(EXAMPLE_INVENTORY))
    by_device = {entry["labels"]["device"]: entry for entry in made}
    assert {device: entry["targets"] for device, entry in by_device.items()} == {
        "pi-attic": ["pi-attic.lan:9090"],  # its own serve host, its group's port
        "pi-garage": ["pi-garage.local:8081"],  # its own port over the fleet's
        "pi-hall": ["pi-hall.local:8080"],  # the fleet's port
        "pi-kitchen": ["pi-kitchen.local:8080"],
        "pi-shed": ["pi-shed.local:9090"],  # a child group's port over its parent's
    }
    assert by_device["pi-kitchen"]["labels"]["groups"] == "canary"


def test_targets_agree_with_ansible_inventory_when_ansible_is_installed():
    """ansible-inventory is the reference: the same host vars, so the same scrape addresses."""
    require_yaml("reading the Ansible inventory")
    from deploy.prometheus import targets

    require(shutil.which("ansible-inventory") is not None, "ansible-inventory is not installed (make system-deps)")
    listed = subprocess.run(["ansible-inventory", "-i", str(EXAMPLE_INVENTORY), "--list"], capture_output=True,
                            text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    host_vars = json.loads(listed.stdout)["_meta"]["hostvars"]
    ours = targets.hosts_with_vars(targets.read_inventory(EXAMPLE_INVENTORY))
    assert set(ours) == set(host_vars)
    for host, (variables, _) in ours.items():
        for name in ("ansible_host", "mnist_edge_serve_host", "mnist_edge_serve_port"):
            assert variables.get(name) == host_vars[host].get(name), (host, name)


def test_the_targets_command_writes_file_sd_json_and_refuses_a_bad_inventory(tmp_path):
    require_yaml("reading the Ansible inventory")
    written = run_cli("-m", "deploy.prometheus.targets", str(EXAMPLE_INVENTORY), "--out", str(tmp_path / "t" / "fleet.json"))
    assert written.returncode == 0, written.stderr
    document = json.loads((tmp_path / "t" / "fleet.json").read_text())
    assert len(document) == 5 and all(len(entry["targets"]) == 1 for entry in document)
    bad = tmp_path / "bad.yml"
    bad.write_text("all:\n  hosts:\n    pi-1:\n      mnist_edge_serve_port: 99999\n")
    refused = run_cli("-m", "deploy.prometheus.targets", str(bad))
    assert refused.returncode == 2
    assert refused.stderr.strip() == f"error: {bad}: host 'pi-1': mnist_edge_serve_port must be 1..65535, got 99999"
