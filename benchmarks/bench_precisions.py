"""What each precision the recovery ladder can pick costs: int8, mixed (dense layer in float), 16x8.

    .venv/bin/python benchmarks/bench_precisions.py [--artifacts artifacts] [--runs 50]

Makes the mixed and 16x8 variants of the trained model (ARTIFACTS/model.keras) with the export's
calibration (300 training images, seed 0) beside its plain int8 file, then runs
`python -m edge_runtime bench` on each with LiteRT and with the numpy engine, one thread, each in
its own process (throughput at batch 256, latency at batch 1, peak RSS, file size). Prints a
Markdown table. Figures on a shared machine move from run to run; compare within one run.
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from export import calibration, sensitivity, to_tflite  # noqa: E402
from train import data  # noqa: E402

BACKENDS = ("litert", "numpy")


def variants(artifacts, directory):
    """Write int8, mixed and 16x8 files of the trained model into `directory`; return {precision: path}."""
    import keras

    dataset = data.load_dataset()
    images = calibration.calibration_images(dataset.x_train, dataset.y_train, 300, 0, dataset.image_shape)
    model = keras.models.load_model(artifacts / "model.keras")
    dense = next(row["tensor"] for row in sensitivity.rank_layers(model, images, images[:50])
                 if row["op"] == "FULLY_CONNECTED")
    paths = {"int8": directory / "int8.tflite", "mixed": directory / "mixed.tflite", "16x8": directory / "16x8.tflite"}
    shutil.copyfile(artifacts / "model_int8.tflite", paths["int8"])
    paths["mixed"].write_bytes(to_tflite.quantize_calibrated(to_tflite.calibrate(model, images), [dense]))
    paths["16x8"].write_bytes(to_tflite.convert_16x8(model, images))
    return paths


def bench(path, backend, runs):
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OPENBLAS_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "edge_runtime", "bench", str(path), "--backend", backend,
                             "--runs", str(runs), "--json"], capture_output=True, text=True, env=environment,
                            cwd=REPO_ROOT)
    if result.returncode != 0:
        raise SystemExit(f"bench {path.name} with {backend} failed: {result.stderr.strip().splitlines()[-1]}")
    return json.loads(result.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=pathlib.Path, default=pathlib.Path("artifacts"))
    parser.add_argument("--runs", type=int, default=50)
    arguments = parser.parse_args()
    print("| precision | size | backend | images/s (batch 256) | batch 1 p50 | peak RSS | vs int8 images/s |")
    print("|---|---:|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as scratch:
        paths = variants(arguments.artifacts, pathlib.Path(scratch))
        baseline = {}
        for precision, path in paths.items():
            for backend in BACKENDS:
                figures = bench(path, backend, arguments.runs)
                speed = figures["throughput_images_per_s"]
                baseline.setdefault(backend, speed)
                print(f"| {precision} | {path.stat().st_size / 1024:.1f} KiB | {backend} | {speed:,.0f} | "
                      f"{figures['latency_batch1_ms']['p50']:.3f} ms | {figures['peak_rss_mib']:.1f} MiB | "
                      f"{speed / baseline[backend]:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
