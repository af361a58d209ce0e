"""pi-check's table and rules without emulation: fast checks of pi/platforms.py and pi/verdicts.py."""

import subprocess

import numpy as np
import pytest

from pi import device, platforms, tasks, verdicts
from tests.conftest import REPO_ROOT


def test_every_row_has_a_rootfs_its_venvs_and_lock_files():
    listed = subprocess.run(["bash", str(REPO_ROOT / "pi" / "rootfs.sh"), "list"], capture_output=True, text=True)
    assert listed.stdout.split() == list(platforms.ROW_NAMES)
    for row in platforms.ROWS:
        for run in row.runs:
            assert row.venv(run.venv).lock, (row.name, run)
            assert run.cpu in platforms.CPUS
        for venv in row.venvs:
            assert (device.HERE / venv.lock).is_file(), venv.lock
        keys = [(run.cpu, run.key) for run in row.runs]
        assert len(keys) == len(set(keys)), f"{row.name}: two runs with one key"
    assert platforms.rows_named(["bookworm-armel"])[0].rss_limit_mib == 128
    with pytest.raises(ValueError, match="unknown row"):
        platforms.rows_named(["bullseye-arm64"])


def test_reference_runs_ask_for_the_reference_kernels_and_subsets_switch_off_the_drop_check():
    environment, arguments = tasks.arguments_for(platforms.Run("reference", "litert", "cortex-a72", "litert", 1000), "out")
    assert environment == "MNIST_EDGE_TFLITE_KERNELS=reference "
    assert "--test-set test-1000.npz --tolerance 100" in arguments and "--backend litert" in arguments
    environment, arguments = tasks.arguments_for(platforms.Run("eval", "debian", "arm1176", None, 10000, "bundle"), "out")
    assert environment == "" and arguments.startswith("eval mnist-edge-bundle/ --threads 1") and "--test-set" not in arguments


def record(directory, name, outputs, rss=50.0, xnnpack=False, backend="numpy"):
    (directory / name).mkdir(parents=True)
    np.save(directory / name / f"model_int8.tflite.{backend}.npy", outputs)
    labels = outputs.argmax(1)
    return {"status": 0, "xnnpack": xnnpack, "outputs": name, "seconds": 1.0,
            "json": {"peak_rss_mib": rss, "results": [{"model": "model_int8.tflite", "backend": backend,
                                                       "images": len(outputs), "accuracy": float(np.mean(labels == 0))}]}}


@pytest.mark.parametrize("case, expected", [
    ("same", []),
    ("one value off", ["raw outputs differ from x86 by up to 1", "differ from x86 LiteRT's reference kernels"]),
    ("over the RSS limit", ["peak RSS 130.0 MiB emulated, limit 128 MiB"]),
])
def test_the_numpy_engine_must_equal_x86_and_x86_litert_reference_kernels(tmp_path, case, expected):
    row = platforms.rows_named(["bookworm-armel"])[0]
    run = platforms.Run("eval", "debian", "arm1176", None, 3, "bundle")
    outputs = np.array([[9, -5, 0], [1, 2, -128], [0, 0, 127]], np.int8)
    mine = outputs.copy()
    if case == "one value off":
        mine[0, 2] += 1
    ours = record(tmp_path / "device", "run", mine, rss=130.0 if case == "over the RSS limit" else 90.0)
    theirs = record(tmp_path / "x86", "twin", outputs)
    reference = record(tmp_path / "x86", "reference", np.concatenate([outputs, outputs]), backend="litert")
    verdict = verdicts.Verdict(max_steps=1, truth={})
    verdict.judge_row(row, tmp_path / "device", tmp_path / "x86", [(run, ours, theirs)], reference,
                      {"arm1176": {"part": None, "hardware": "QEMU v10.0.2 arm,arm1176", "model": "ARMv6"}})
    assert len(verdict.failures) == len(expected), verdict.failures
    for failure, text in zip(verdict.failures, expected):
        assert text in failure


def test_xnnpack_outputs_may_differ_by_max_steps_and_no_more_and_the_cpu_must_be_the_one_asked_for(tmp_path):
    row = platforms.rows_named(["bookworm-arm64"])[0]
    run = platforms.Run("eval", "litert", "cortex-a72", "litert", 2, "int8")
    outputs = np.array([[9, -5], [1, 2]], np.int8)
    for steps, failures in ((1, 0), (2, 1)):
        mine = outputs.copy()
        mine[0, 1] += steps
        ours = record(tmp_path / f"device{steps}", "run", mine, xnnpack=True, backend="litert")
        theirs = record(tmp_path / f"x86{steps}", "twin", outputs, xnnpack=True, backend="litert")
        verdict = verdicts.Verdict(max_steps=1, truth={})
        verdict.judge_row(row, tmp_path / f"device{steps}", tmp_path / f"x86{steps}", [(run, ours, theirs)], None,
                          {"cortex-a72": {"part": "0xd08", "hardware": None, "model": None}})
        assert len(verdict.failures) == failures, verdict.failures
    verdict = verdicts.Verdict(max_steps=1, truth={})
    verdict.judge_row(row, tmp_path, tmp_path, [], None, {"cortex-a72": {"part": "0xd0b", "hardware": None, "model": None}})
    assert verdict.failures == ["bookworm-arm64: QEMU_CPU=cortex-a72 but /proc/cpuinfo says "
                                "{'part': '0xd0b', 'hardware': None, 'model': None} (expected CPU part 0xd08)"]
