"""The training and export commands, run for real in a subprocess, on bad input."""

from tests.conftest import run_cli


def test_export_without_a_model_says_what_to_do(tmp_path):
    result = run_cli("-m", "export", "--model", str(tmp_path / "model.keras"), "--output-dir", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'model.keras'}: no trained model; run 'make train' first"


def test_train_refuses_a_corrupt_dataset_in_one_line(tmp_path):
    bad = tmp_path / "mnist.npz"
    bad.write_bytes(b"this is not a zip archive")
    result = run_cli("-m", "train", "--data", str(bad), "--output-dir", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {bad}: not a readable .npz file")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "model.keras").exists()


def test_train_refuses_zero_epochs_as_a_bad_option(tmp_path):
    result = run_cli("-m", "train", "--epochs", "0", "--output-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr == "error: python -m train: argument --epochs: must be a positive integer, got 0\n"


def test_train_shows_its_options_with_their_defaults():
    result = run_cli("-m", "train", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # argparse wraps to the terminal's width
    assert "passes over the training images (default: 3)" in text and "(default: 1337)" in text


def test_bare_make_lists_every_target_with_what_it_does():
    import re
    import subprocess

    from tests.conftest import REPO_ROOT

    listed = subprocess.run(["make", "--no-print-directory"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert "quick start: make train export" in lines[0]
    described = dict(re.match(r"\s+(\S+)\s+(.+)", line).groups() for line in lines[1:])
    makefile = (REPO_ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    assert set(described) == targets, set(described) ^ targets
    assert all(len(text) > 10 for text in described.values())
