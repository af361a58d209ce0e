"""`make train export` with DATA=, LABELS= and EXTRA_DATA=: a real make, asked (`make -q`) whether the
model is up to date after each change of path or of content, a refused export, and one real rebuild."""

import os
import shutil
import subprocess

import numpy as np
import pytest

from conftest import REPO_ROOT, require


def make(*arguments):
    require(shutil.which("make"), "needs GNU make")
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(["make", "--no-print-directory", *arguments], cwd=REPO_ROOT, env=environment,
                          capture_output=True, text=True, timeout=900)


def save_dataset(path, mnist, count, test_count, labels_shift=0):
    np.savez(path, x_train=mnist.x_train[:count], y_train=(mnist.y_train[:count] + labels_shift) % 10,
             x_test=mnist.x_test[:test_count], y_test=(mnist.y_test[:test_count] + labels_shift) % 10)
    return path


@pytest.mark.slow
def test_a_change_of_data_labels_or_extra_data_makes_the_model_out_of_date(tmp_path, mnist):
    require((REPO_ROOT / ".venv" / "bin" / "python").exists(), "needs the workstation venv (make venv)")
    artifacts = tmp_path / "artifacts"
    data = save_dataset(tmp_path / "data.npz", mnist, 600, 200)
    built = make("train", f"ARTIFACTS={artifacts}", f"DATA={data}")
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    model_time = (artifacts / "model.keras").stat().st_mtime_ns
    recorded = (artifacts / "data-inputs.txt").read_text()
    assert f"DATA={data}\n  {data}: {data.stat().st_size} bytes, sha256 " in recorded

    def up_to_date(**variables):
        asked = make("-q", "train", f"ARTIFACTS={artifacts}", *(f"{name}={value}" for name, value in variables.items()))
        assert asked.returncode in (0, 1), asked.stderr
        return asked.returncode == 0

    assert up_to_date(DATA=data)
    assert "Nothing to be done" in make("train", f"ARTIFACTS={artifacts}", f"DATA={data}").stdout
    assert not up_to_date()  # the pinned MNIST
    copy = shutil.copy(data, tmp_path / "copy.npz")
    assert not up_to_date(DATA=copy)  # another path
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"digit {digit}\n" for digit in range(10)))
    assert not up_to_date(DATA=data, LABELS=labels)
    assert not up_to_date(DATA=data)  # a labels.txt beside the data is read by train: it counts too
    labels.unlink()
    extra = save_dataset(tmp_path / "extra.npz", mnist, 20, 10)
    assert not up_to_date(DATA=data, EXTRA_DATA=extra)
    assert up_to_date(DATA=data)  # asking changed nothing
    assert (artifacts / "data-inputs.txt").read_text() == recorded
    assert not (artifacts / "data-inputs.txt").with_name(".data-inputs.txt.partial").exists()

    # The case: `make export LABELS=twelve_names.txt` once said "Nothing to be done".
    twelve = tmp_path / "twelve_names.txt"
    twelve.write_text("".join(f"class {index}\n" for index in range(12)))
    refused = make("export", f"ARTIFACTS={artifacts}", f"DATA={data}", f"LABELS={twelve}")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert (f"error: {data}: 2 of 12 classes have no training images (classes 10, 11); if those classes are meant"
            in refused.stderr), refused.stderr[-2000:]
    assert not (artifacts / "manifest.json").exists()

    # New content behind the same path, even with the old time: the model is trained again.
    stat = data.stat()
    save_dataset(data, mnist, 600, 200, labels_shift=1)
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert not up_to_date(DATA=data)
    rebuilt = make("train", f"ARTIFACTS={artifacts}", f"DATA={data}")
    assert rebuilt.returncode == 0 and "python -m train" in rebuilt.stdout, rebuilt.stderr[-2000:]
    assert (artifacts / "model.keras").stat().st_mtime_ns > model_time
    assert up_to_date(DATA=data)

