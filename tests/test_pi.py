"""The deploy bundle on every emulated Raspberry Pi OS: `pi/check.sh`, the same as `make pi-check`.

Slow (see docs/pi-emulation.md for each row's cost) and needs root: it builds or reuses a rootfs per row (64-bit
bookworm and trixie, 32-bit bookworm and trixie armhf, bookworm armel), installs the bundle there as docs/device.md tells
that platform's users, and checks that eval, predict and bench give the x86 results, and that
`mnist-edge install` switches, refuses at the gate and rolls back there (three signed bundles that
pi/install_bundles.py makes from the trained export). One check runs for the module; the tests read
its summary. Skipped where the machine cannot emulate (not root, no
binfmt_misc, no debootstrap), except in CI, where that is a failure.
"""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, require, run_cli

pytestmark = pytest.mark.slow


def cannot_emulate_reason():
    """None when pi/rootfs.sh says this machine can emulate an arm64 Pi, else its reason."""
    result = subprocess.run(["bash", str(REPO_ROOT / "pi" / "rootfs.sh"), "can-emulate"], capture_output=True, text=True)
    return None if result.returncode == 0 else (result.stdout.strip() or result.stderr.strip() or "unknown reason")


@pytest.fixture(scope="module")
def trained_bundle(trained, tmp_path_factory):
    """A real deploy bundle from the session's trained export, as `make bundle` packs it."""
    reason = cannot_emulate_reason()
    require(reason is None, f"cannot emulate a Raspberry Pi here: {reason}")
    bundle = tmp_path_factory.mktemp("pi-bundle") / "mnist-edge-bundle.tar.gz"
    completed = run_cli("-m", "export.bundle", "--artifacts", str(trained), "--output", str(bundle))
    assert completed.returncode == 0, completed.stderr[-3000:]
    return bundle


def run_pi_check(bundle, artifacts, summary_path):
    completed = subprocess.run(
        ["bash", str(REPO_ROOT / "pi" / "check.sh"), "--bundle", str(bundle), "--artifacts", str(artifacts),
         "--python", sys.executable, "--summary-json", str(summary_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=3600,
    )
    print(completed.stdout)
    assert completed.returncode == 0, (completed.stdout[-4000:] + completed.stderr[-4000:])
    return json.loads(summary_path.read_text())


@pytest.fixture(scope="module")
def summary(trained_bundle, trained, tmp_path_factory):
    return run_pi_check(trained_bundle, trained, tmp_path_factory.mktemp("pi-check") / "pi-summary.json")


def lines_of(summary, row, **fields):
    found = [line for line in summary["lines"] if line["row"] == row
             and all(line[key] == value for key, value in fields.items())]
    assert found, f"no line {fields} for {row} in {summary['lines']}"
    return found


def test_every_row_passes(summary):
    assert summary["failures"] == []
    assert set(summary["rows"]) == {"bookworm-arm64", "trixie-arm64", "bookworm-armhf", "trixie-armhf", "bookworm-armel"}
    for name, row in summary["rows"].items():
        assert row["passed"], name
    notes = "\n".join(summary["notes"])
    # predict on PNG photos, on every row, with x86's labels.
    assert notes.count("x86: same labels") == 8, notes
    assert "DIFFERENT" not in notes


def test_numpy_engine_is_bit_identical_to_x86_litert_reference_kernels_on_every_row(summary):
    for row in summary["rows"]:
        lines = lines_of(summary, row, backend="numpy")
        for line in lines:
            assert line["outputs_identical"] and line["identical_to_x86_reference"], line
            assert line["accuracy"] == line["x86_accuracy"] and line["images"] >= 2000, line
    # The whole test set where emulation allows it (on 64-bit bookworm and on the ARMv6 row).
    assert max(line["images"] for line in lines_of(summary, "bookworm-arm64", backend="numpy")) == 10000
    assert max(line["images"] for line in lines_of(summary, "bookworm-armel", backend="numpy")) == 10000


def test_interpreters_on_64_and_32_bit_rows_match_x86(summary):
    for cpu in ("cortex-a72", "cortex-a76"):
        (int8,) = lines_of(summary, "bookworm-arm64", cpu=cpu, kind="eval", backend="litert", images=10000)
        assert int8["accuracy"] == int8["x86_accuracy"] >= 0.98
        assert int8["top1_identical"] and int8["xnnpack"] and int8["max_difference"] <= 1
        for line in lines_of(summary, "bookworm-arm64", cpu=cpu, kind="reference"):
            assert line["outputs_identical"], line
    assert lines_of(summary, "bookworm-arm64", cpu="cortex-a72", backend="onnxruntime")[0]["outputs_identical"]
    assert lines_of(summary, "bookworm-arm64", cpu="cortex-a72", backend="tflite-runtime", kind="eval")[0]["top1_identical"]
    (trixie,) = lines_of(summary, "trixie-arm64", kind="eval", backend="litert", images=10000)
    assert trixie["accuracy"] == trixie["x86_accuracy"] >= 0.98 and trixie["max_difference"] <= 1
    assert lines_of(summary, "trixie-arm64", backend="onnxruntime")[0]["outputs_identical"]
    for line in lines_of(summary, "bookworm-armhf", backend="tflite-runtime"):
        assert line["top1_identical"] and line["accuracy"] == line["x86_accuracy"], line
    for line in lines_of(summary, "bookworm-armhf", kind="reference"):
        assert line["outputs_identical"], line


def test_armv6_row_runs_the_numpy_engine_in_integer_arithmetic_within_128_mib(summary):
    (line,) = lines_of(summary, "bookworm-armel", kind="eval")
    assert line["backend"] == "numpy" and line["images"] >= 2000
    assert 0 < line["rss_mib"] < 128, line
    assert summary["rss_limits_mib"]["bookworm-armel"] == 128
    install = summary["rows"]["bookworm-armel"]["installs"]["debian"]
    assert install["numpy_engine_arithmetic"] == "integer" and install["numpy_from"] == "Debian"


def test_installed_as_the_device_page_says(summary):
    installs = {row: summary["rows"][row]["installs"] for row in summary["rows"]}
    assert installs["bookworm-arm64"]["litert"]["numpy"].startswith("2.")
    assert installs["bookworm-arm64"]["tflite-runtime"]["numpy_from"] == "Debian"
    assert installs["bookworm-arm64"]["tflite-runtime"]["packages"]["tflite-runtime"] == "2.14.0"
    assert installs["trixie-arm64"]["litert"]["python"].startswith("3.13")
    assert installs["trixie-arm64"]["debian"]["numpy"].startswith("2.2") and installs["trixie-arm64"]["debian"]["numpy_from"] == "Debian"
    assert installs["bookworm-armhf"]["tflite-runtime"]["packages"]["tflite-runtime"] == "2.14.0"
    assert installs["bookworm-armhf"]["tflite-runtime"]["numpy"] == "1.24.2"
    assert installs["bookworm-armhf"]["tflite-runtime"]["machine"] == "armv7l"
    # 32-bit trixie: no interpreter at all; the numpy engine over Debian's numpy 2.2 and Pillow 11.1.
    trixie_32 = installs["trixie-armhf"]["debian"]
    assert trixie_32["machine"] == "armv7l" and trixie_32["python"].startswith("3.13"), trixie_32
    assert trixie_32["backends"] == "numpy" and trixie_32["numpy"].startswith("2.2") and trixie_32["numpy_from"] == "Debian"
    # ARMv6: no interpreter installs; the wheel with no extra runs on Debian's numpy and Pillow.
    assert installs["bookworm-armel"]["debian"]["backends"] == "numpy"
    assert installs["bookworm-armel"]["debian"]["numpy"] == "1.24.2"
    assert installs["bookworm-armel"]["debian"]["pillow"] == "9.4.0"


def test_serve_starts_on_the_emulated_pi_and_answers_the_host_over_loopback(summary):
    """`serve` on 64-bit bookworm (LiteRT, Pi 4) and on ARMv6 (the numpy engine, Pi Zero): self-check
    passed, the PNG photos posted from this machine answered as x86's serve answers them."""
    served = {key: record for key, record in summary["device"].items() if " serve-" in key}
    assert {key.split()[0] for key in served} == {"bookworm-arm64", "bookworm-armel"}, sorted(served)
    for key, record in served.items():
        answers = record["json"]
        assert record["status"] == 0 and answers["readyz"] == 200 and answers["exit"] == 0, (key, record)
        assert answers["info"]["self_check"]["passed"] and answers["info"]["self_check"]["images"] == 1000, key
        assert set(answers["statuses"].values()) == {200} and len(answers["labels"]) == len(summary["truth"]), key
        right = sum(answers["labels"][name] == label for name, label in summary["truth"].items())
        assert right >= len(summary["truth"]) - 1, (key, answers["labels"])
    assert served[next(key for key in served if key.startswith("bookworm-armel"))]["json"]["info"]["backend"] == "numpy"
    notes = [note for note in summary["notes"] if " serve (" in note]
    assert len(notes) == 2 and all("x86 serve: same answers" in note for note in notes), notes


def install_record(summary, row):
    (record,) = [record for key, record in summary["device"].items() if key.startswith(f"{row} ") and " install-" in key]
    assert record["status"] == 0, record
    return record


def install_outcomes(summary, row):
    """The install run of `row`: ({outcome name: its record}, the run's InstallPlan as a dict)."""
    record = install_record(summary, row)
    return record["json"]["outcomes"], record["json"]["plan"]


def logged(outcome, start):
    """The one line install logged that starts with `start` (after "mnist-edge install: ")."""
    found = [line.removeprefix("mnist-edge install: ") for line in outcome["lines"]
             if line.removeprefix("mnist-edge install: ").startswith(start)]
    assert len(found) == 1, (start, outcome["lines"])
    return found[0]


def assert_killed_while_unpacking_left_the_good_version(outcomes, good):
    """The install killed (SIGKILL) in the middle of unpacking: `current` is still the good version,
    and the falls-live install after it went through the half-unpacked version (its exit 4 is checked
    by the caller)."""
    killed = outcomes["killed-unpacking"]
    assert killed["status"] in (-9, 137) and killed["current"] == f"versions/{good}", killed
    assert killed["lines"][-1].removeprefix("mnist-edge install: ").startswith("unpacking "), killed["lines"]
    assert killed["identity"] == outcomes["falls-live"]["identity"]


def test_install_on_64_bit_pi_switches_refuses_at_the_gate_and_rolls_back_on_live_agreement(summary):
    """bookworm-arm64, Pi 4, LiteRT: serve shadows with the float model, so the outlier bundle whose
    gate was opened at export is caught by its live int8-float agreement after the switch."""
    outcomes, plan = install_outcomes(summary, "bookworm-arm64")
    good = outcomes["good"]["identity"]
    assert [outcomes[name]["status"] for name in ("good", "gate-fails", "falls-live")] == [0, 3, 4]
    assert all(outcome["current"] == f"versions/{good}" for outcome in outcomes.values()), outcomes
    assert logged(outcomes["good"], "installed ").endswith(
        f"int8-float agreement 100.00% over the last {plan['window']} shadowed requests")
    assert "gate: eval on " in " ".join(outcomes["good"]["lines"]) and f"on the first {summary_gate(summary)} test images" \
        in " ".join(outcomes["good"]["lines"])
    refused = logged(outcomes["gate-fails"], f"refused at the gate, {good} stays current: FAILED: model_int8.tflite: ")
    assert "points below the float model's" in refused
    rolled = logged(outcomes["falls-live"], f"rolled back to {good}: int8-float agreement ")
    assert rolled.endswith(f"over the last {plan['window']} shadowed requests is below serve's threshold 99.00%")
    assert outcomes["falls-live"]["fed"] >= plan["window"]
    assert_killed_while_unpacking_left_the_good_version(outcomes, good)
    assert install_record(summary, "bookworm-arm64")["json"]["serving_good_again"]


def test_install_on_armv6_pi_checks_readiness_only_and_rolls_back_on_the_devices_own_tolerance(summary):
    """bookworm-armel, Pi Zero, numpy engine: no float model runs, so serve cannot shadow. Probation
    checks readiness only; the outlier bundle is refused by serve's start-up self-check under the
    device's own --tolerance 1, /readyz answers 503 with the reason, and install rolls back."""
    outcomes, plan = install_outcomes(summary, "bookworm-armel")
    good = outcomes["good"]["identity"]
    assert [outcomes[name]["status"] for name in ("good", "gate-fails", "falls-live")] == [0, 3, 4]
    assert all(outcome["current"] == f"versions/{good}" for outcome in outcomes.values()), outcomes
    assert "--tolerance 1" in plan["serve_flags"] and not plan["shadowing"]
    assert logged(outcomes["good"], "installed ").endswith(
        "no shadow agreement on this device (no float reference it can run): readiness checked only")
    refused = logged(outcomes["gate-fails"], f"refused at the gate, {good} stays current: FAILED: model_int8.tflite: ")
    assert "points below the float model's" in refused
    rolled = logged(outcomes["falls-live"], f"rolled back to {good}: http://127.0.0.1:")
    assert "/readyz answers 503: " in rolled and "(tolerance 1.00)" in rolled
    assert_killed_while_unpacking_left_the_good_version(outcomes, good)
    assert install_record(summary, "bookworm-armel")["json"]["serving_good_again"]


def summary_gate(summary):
    """install --gate-images of the install runs (their key ends with it)."""
    (images,) = {int(key.rsplit("-", 1)[1]) for key in summary["device"] if " install-" in key}
    return images
