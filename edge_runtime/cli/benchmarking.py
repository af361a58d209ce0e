"""Speed and memory of a model on this device: latency, throughput, cold start and peak RSS.

Figures from a shared or emulated machine are noisy; compare them side by side within one run
(benchmarks/ does that against the bare interpreter) rather than against fixed thresholds.
"""

import os
import subprocess
import sys
import time

import numpy as np

from edge_runtime import errors

def percentiles_ms(seconds):
    """Return p50/p90/p99 of a list of durations in seconds, in milliseconds."""
    values = 1000.0 * np.asarray(seconds)
    return {f"p{q}": float(np.percentile(values, q)) for q in (50, 90, 99)}


def latency(run_once, image, runs=200, warmup=20):
    """Time `runs` calls of `run_once(image)` (one image); return percentiles in ms."""
    for _ in range(warmup):
        run_once(image)
    durations = []
    for _ in range(runs):
        started = time.perf_counter()
        run_once(image)
        durations.append(time.perf_counter() - started)
    return percentiles_ms(durations)


def throughput(run_batch, images, batch_size=256, repeats=3):
    """Pass `images` through `run_batch` in batches, `repeats` times; return the best images per second."""
    run_batch(images[:batch_size])
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        for start in range(0, len(images), batch_size):
            run_batch(images[start : start + batch_size])
        best = max(best, len(images) / (time.perf_counter() - started))
    return best


def cold_start(model_path, backend=None, threads=1, python=sys.executable):
    """Start a fresh Python process that loads the model and predicts one image.

    Returns: (seconds from process start to the first prediction, that process's peak RSS in MiB).
    Raises: EdgeRuntimeError when the child fails (its last error line is included).
    """
    return child_peak_rss([python, "-m", "edge_runtime.cli.cold_start", str(model_path), backend or "", str(threads or 0)],
                          what=model_path)


def child_peak_rss(command, what):
    """Run `command`, a program that ends by printing `first-prediction <KiB>` (see cold_start.py);
    return (its wall time in s, its peak RSS in MiB).

    Raises: EdgeRuntimeError naming `what` when the child fails (its last error line is included).
    """
    started = time.perf_counter()
    child = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    elapsed = time.perf_counter() - started
    report = [line for line in child.stdout.splitlines() if line.startswith("first-prediction")]
    if child.returncode != 0 or not report:
        last = (child.stderr.strip().splitlines() or ["no output"])[-1]
        raise errors.EdgeRuntimeError(f"{what}: cold-start process failed: {last}")
    return elapsed, int(report[0].split()[1]) / 1024.0


def run_benchmark(model, images, batch_size=256, runs=200, cold_starts=3):
    """Measure everything `bench` reports for one loaded model; return a JSON-ready dict."""
    cold = [cold_start(model.path, model.backend.name, threads=model.threads)
            for _ in range(cold_starts)]
    return {
        "model": str(model.path),
        "backend": model.backend.name,
        "latency_batch1_ms": latency(model.predict, images[:1], runs=runs),
        "throughput_images_per_s": throughput(model.predict, images, batch_size=batch_size),
        "throughput_batch_size": batch_size,
        "cold_start_s": float(np.median([seconds for seconds, _ in cold])),
        "peak_rss_mib": float(np.median([rss for _, rss in cold])),
    }


def format_table(rows):
    """Render a list of (name, value) pairs as an aligned two-column text table."""
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)

