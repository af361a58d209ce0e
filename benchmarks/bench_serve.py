"""`mnist-edge serve` measured: requests/s and latency at 1, 4 and 16 clients beside in-process
`Classifier.predict` on the same image files, time to ready, and memory against `predict`'s.

    .venv/bin/python benchmarks/bench_serve.py [--artifacts artifacts] [--requests 2000]

The server runs on one core (the first this process may use), the clients on another, so the
server's figures are those of one core; in-process predict runs on the server's core too. Shared
machines are noisy: compare within one run (the ratios), not across runs.
"""

import argparse
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from benchmarks import http_load  # noqa: E402
from edge_runtime import atomic_files, benchmarking, classifier, evaluation  # noqa: E402

BUNDLE_FILES = ("model_int8.tflite", "model_int8.onnx", "model_f32.tflite", "manifest.json")
CLIENT_COUNTS = (1, 4, 16)
# predict's own path from one image file to its answer, in a fresh process, for its peak RSS.
PREDICT_PEAK_PROGRAM = """
import sys
from edge_runtime import cli
cli.main(["predict", sys.argv[1], sys.argv[2]])
""" + benchmarking.PEAK_RSS_CODE


def make_bundle(artifacts, directory):
    """A bundle directory from an export (the test set from the export or the pinned MNIST)."""
    for name in BUNDLE_FILES:
        shutil.copy(artifacts / name, directory / name)
    if (artifacts / evaluation.TEST_SET_NAME).is_file():
        shutil.copy(artifacts / evaluation.TEST_SET_NAME, directory / evaluation.TEST_SET_NAME)
    else:
        from train import data

        dataset = data.load_dataset()
        np.savez_compressed(directory / evaluation.TEST_SET_NAME, x_test=dataset.x_test, y_test=dataset.y_test)
    return directory


def write_photos(bundle, directory, count):
    """`count` test digits as PNG files the way a page or a phone sends them: dark on light, 112×112."""
    from PIL import Image

    with np.load(bundle / evaluation.TEST_SET_NAME) as archive:
        digits = archive["x_test"][:count]
    paths = []
    for index, digit in enumerate(digits):
        path = directory / f"digit{index:04d}.png"
        Image.fromarray(255 - digit).resize((112, 112)).save(path)
        paths.append(path)
    return paths


def serve_figures(server, bodies, clients, requests):
    work = [http_load.Request("POST", "/api/predict", bodies[index % len(bodies)], (("Content-Type", "image/png"),))
            for index in range(requests)]
    http_load.run("127.0.0.1", server.port, work[:100], clients)  # warm up
    started = time.perf_counter()
    responses = http_load.run("127.0.0.1", server.port, work, clients)
    elapsed = time.perf_counter() - started
    if any(response.status != 200 for response in responses):
        raise RuntimeError(f"{sum(r.status != 200 for r in responses)} requests failed at {clients} clients")
    latency = benchmarking.percentiles_ms([response.seconds for response in responses])
    return {"requests_per_s": requests / elapsed, "p50_ms": latency["p50"], "p99_ms": latency["p99"]}


def in_process_figures(model_path, paths, requests, core):
    """Classifier.predict on the same files, one at a time, on the server's core, in this process."""
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        model = classifier.Classifier.load(model_path, threads=1)
        for path in paths[:100]:
            model.predict(path)
        durations = []
        for index in range(requests):
            started = time.perf_counter()
            model.predict(paths[index % len(paths)])
            durations.append(time.perf_counter() - started)
    finally:
        os.sched_setaffinity(0, previous)
    latency = benchmarking.percentiles_ms(durations)
    return {"requests_per_s": requests / sum(durations), "p50_ms": latency["p50"], "p99_ms": latency["p99"]}


def time_to_ready(bundle, flags, repeats, core):
    times = []
    for _ in range(repeats):
        with http_load.ServeProcess(bundle, *flags, cpus=str(core)) as server:
            times.append(server.ready_seconds)
    return float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=pathlib.Path, default=REPO_ROOT / "artifacts")
    parser.add_argument("--requests", type=int, default=2000, help="requests per client count")
    parser.add_argument("--repeats", type=int, default=3, help="starts per time-to-ready figure")
    parser.add_argument("--output", type=pathlib.Path, default=None)
    arguments = parser.parse_args(argv)
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        print("error: needs two cores: one for the server, one for the clients", file=sys.stderr)
        return 1
    server_core, client_core = cores[0], cores[1]
    for name in BUNDLE_FILES:
        if not (arguments.artifacts / name).is_file():
            print(f"error: {arguments.artifacts / name}: missing; run 'make train export' first", file=sys.stderr)
            return 1

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as scratch:
        scratch = pathlib.Path(scratch)
        bundle = make_bundle(arguments.artifacts, pathlib.Path(scratch))
        (scratch / "photos").mkdir()
        paths = write_photos(bundle, scratch / "photos", 200)
        bodies = [path.read_bytes() for path in paths]
        model_path = bundle / "model_int8.tflite"

        os.sched_setaffinity(0, {client_core})
        result = {"server_core": server_core, "requests": arguments.requests, "serve": {}}
        with http_load.ServeProcess(bundle, "--self-check-images", "0", cpus=str(server_core)) as server:
            result["idle_rss_mib"] = server.rss_kib() / 1024
            for clients in CLIENT_COUNTS:
                result["serve"][clients] = serve_figures(server, bodies, clients, arguments.requests)
            result["rss_after_load_mib"] = server.rss_kib() / 1024
            result["peak_rss_mib"] = server.rss_kib("VmHWM") / 1024
        result["in_process"] = in_process_figures(model_path, paths, arguments.requests, server_core)
        result["time_to_ready_s"] = {
            "full self-check (10,000 images)": time_to_ready(bundle, [], arguments.repeats, server_core),
            "--self-check-images 1000": time_to_ready(bundle, ["--self-check-images", "1000"], arguments.repeats, server_core),
            "no self-check (--self-check-images 0)": time_to_ready(bundle, ["--self-check-images", "0"], arguments.repeats, server_core),
        }
        _, predict_peak = benchmarking.child_peak_rss(
            ["taskset", "-c", str(server_core), sys.executable, "-c", PREDICT_PEAK_PROGRAM, str(model_path), str(paths[0])],
            what="predict")
        result["predict_peak_rss_mib"] = predict_peak

    print(f"serve: one core for the server, {arguments.requests} PNG requests (112×112 digits) per row\n")
    print("| | requests/s | p50 ms | p99 ms | requests/s vs in-process |\n|---|---:|---:|---:|---:|")
    base = result["in_process"]["requests_per_s"]
    print(f"| in-process `Classifier.predict(file)` | {base:,.0f} | {result['in_process']['p50_ms']:.2f} | "
          f"{result['in_process']['p99_ms']:.2f} | 1.00× |")
    for clients, figures in result["serve"].items():
        print(f"| serve, {clients} client{'s' if clients > 1 else ''} | {figures['requests_per_s']:,.0f} | "
              f"{figures['p50_ms']:.2f} | {figures['p99_ms']:.2f} | {figures['requests_per_s'] / base:.2f}× |")
    print("\n| start to ready | s |\n|---|---:|")
    for name, seconds in result["time_to_ready_s"].items():
        print(f"| {name} | {seconds:.2f} |")
    print("\n| memory | MiB |\n|---|---:|")
    print(f"| serve, idle after start | {result['idle_rss_mib']:.1f} |")
    print(f"| serve, after the load (peak) | {result['rss_after_load_mib']:.1f} ({result['peak_rss_mib']:.1f}) |")
    print(f"| `predict` one PNG, peak | {result['predict_peak_rss_mib']:.1f} |")
    print(f"\nidle RSS / predict's peak: {result['idle_rss_mib'] / result['predict_peak_rss_mib']:.2f}×")
    output = arguments.output or arguments.artifacts / "benchmarks" / "serve.json"
    atomic_files.write_text_atomically(output, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
