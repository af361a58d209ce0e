"""`mnist-edge serve` measured: requests/s and latency at 1, 4 and 16 clients beside in-process
`Classifier.predict` on the same image files, what the shadow float model costs (p50 and server CPU
per request at --shadow-rate 0, 0.1 and 1), time to ready and idle memory after each kind of start
(the default one included), and memory against `predict`'s.

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
from edge_runtime import atomic_files, classifier, manifest  # noqa: E402
from edge_runtime.cli import benchmarking  # noqa: E402
from edge_runtime.pictures import preparation  # noqa: E402

BUNDLE_FILES = ("model_int8.tflite", "model_int8.onnx", "model_f32.tflite", "manifest.json")
CLIENT_COUNTS = (1, 4, 16)
SHADOW_RATES = ("0", "0.1", "1")
SHADOW_ROUNDS = 3  # interleaved, medians reported: the machine is shared
# predict's own path from one image file to its answer, in a fresh process, for its peak RSS.
PREDICT_PEAK_PROGRAM = REPO_ROOT / "benchmarks" / "predict_peak_rss.py"


def test_set_name(artifacts):
    """The test set's file name, as the export's manifest records it."""
    return manifest.read_manifest(artifacts / manifest.MANIFEST_NAME).file_with_role(manifest.ROLE_TEST_SET)


def make_bundle(artifacts, directory):
    """A bundle directory from an export (the test set from the export or the pinned MNIST)."""
    for name in BUNDLE_FILES:
        shutil.copy(artifacts / name, directory / name)
    name = test_set_name(artifacts)
    if (artifacts / name).is_file():
        shutil.copy(artifacts / name, directory / name)
    else:
        from train import data

        dataset = data.load_dataset()
        np.savez_compressed(directory / name, x_test=dataset.x_test, y_test=dataset.y_test)
    return directory


def write_photos(bundle, directory, count):
    """`count` test digits as PNG files the way a page or a phone sends them: dark on light, 112×112."""
    from PIL import Image

    with np.load(bundle / test_set_name(bundle)) as archive:
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


def cpu_seconds(pid):
    """User + system CPU time the process `pid` has used so far, from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def shadow_figures(bundle, bodies, requests, core):
    """p50, requests/s and server CPU ms per request at each shadow rate, one client, medians of rounds."""
    work = [http_load.Request("POST", "/api/predict", bodies[index % len(bodies)], (("Content-Type", "image/png"),))
            for index in range(requests)]
    measured = {rate: [] for rate in SHADOW_RATES}
    for _ in range(SHADOW_ROUNDS):
        for rate in SHADOW_RATES:
            with http_load.ServeProcess(bundle, "--self-check-images", "0", "--shadow-rate", rate, cpus=str(core)) as server:
                http_load.run("127.0.0.1", server.port, work[:100], 1)  # warm up
                cpu_before, started = cpu_seconds(server.pid), time.perf_counter()
                responses = http_load.run("127.0.0.1", server.port, work, 1)
                elapsed, cpu = time.perf_counter() - started, cpu_seconds(server.pid) - cpu_before
            if any(response.status != 200 for response in responses):
                raise RuntimeError(f"requests failed at --shadow-rate {rate}")
            latency = benchmarking.percentiles_ms([response.seconds for response in responses])
            measured[rate].append({"p50_ms": latency["p50"], "requests_per_s": requests / elapsed,
                                   "cpu_ms_per_request": 1000 * cpu / requests})
    return {rate: {key: float(np.median([round_[key] for round_ in rounds])) for key in rounds[0]}
            for rate, rounds in measured.items()}


def model_costs(bundle, core, rounds=5):
    """p50 ms of one image through the int8 model and through the float reference (what a shadowed
    image adds), on the server's core, interleaved rounds, medians."""
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        with np.load(bundle / test_set_name(bundle)) as archive:
            image = archive["x_test"][:1]
        models = {name: classifier.Classifier.load(bundle / name, threads=1)
                  for name in ("model_int8.tflite", "model_f32.tflite")}
        measured = {name: [] for name in models}
        for _ in range(rounds):
            for name, model in models.items():
                measured[name].append(benchmarking.latency(model.predict, image, runs=2000, warmup=200)["p50"])
    finally:
        os.sched_setaffinity(0, previous)
    return {name: float(np.median(values)) for name, values in measured.items()}


def in_process_figures(model_path, paths, requests, core):
    """`predict`'s path in this process (prepare the file as the manifest says, then Classifier.predict)
    on the same files, one at a time, on the server's core."""
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        model = classifier.Classifier.load(model_path, threads=1)
        how = preparation.for_classifier(model)

        def predict_file(path):
            return model.predict(preparation.prepare_files([path], how)[0])

        for path in paths[:100]:
            predict_file(path)
        durations = []
        for index in range(requests):
            started = time.perf_counter()
            predict_file(paths[index % len(paths)])
            durations.append(time.perf_counter() - started)
    finally:
        os.sched_setaffinity(0, previous)
    latency = benchmarking.percentiles_ms(durations)
    return {"requests_per_s": requests / sum(durations), "p50_ms": latency["p50"], "p99_ms": latency["p99"]}


def start_figures(bundle, flags, repeats, core):
    """Seconds from process start to "ready", and the idle RSS (MiB) once ready: medians of `repeats` starts."""
    times, memory = [], []
    for _ in range(repeats):
        with http_load.ServeProcess(bundle, *flags, cpus=str(core)) as server:
            times.append(server.ready_seconds)
            time.sleep(0.5)  # idle: nothing left of the start-up but what the service keeps
            memory.append(server.rss_kib() / 1024)
    return float(np.median(times)), float(np.median(memory))


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
        with http_load.ServeProcess(bundle, "--self-check-images", "0", "--shadow-rate", "0",
                                    cpus=str(server_core)) as server:
            result["idle_rss_mib"] = server.rss_kib() / 1024
            for clients in CLIENT_COUNTS:
                result["serve"][clients] = serve_figures(server, bodies, clients, arguments.requests)
            result["rss_after_load_mib"] = server.rss_kib() / 1024
            result["peak_rss_mib"] = server.rss_kib("VmHWM") / 1024
        result["model_p50_ms"] = model_costs(bundle, server_core)
        result["shadow"] = shadow_figures(bundle, bodies, arguments.requests, server_core)
        result["in_process"] = in_process_figures(model_path, paths, arguments.requests, server_core)
        starts = {
            "default (full self-check, 10,000 images)": [],
            "--self-check-images 1000": ["--self-check-images", "1000"],
            "no self-check (--self-check-images 0)": ["--self-check-images", "0"],
        }
        measured = {name: start_figures(bundle, flags, arguments.repeats, server_core) for name, flags in starts.items()}
        result["time_to_ready_s"] = {name: seconds for name, (seconds, _) in measured.items()}
        result["idle_rss_after_start_mib"] = {name: rss for name, (_, rss) in measured.items()}
        _, predict_peak = benchmarking.child_peak_rss(
            ["taskset", "-c", str(server_core), sys.executable, str(PREDICT_PEAK_PROGRAM), str(model_path), str(paths[0])],
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
    print(f"\nshadow float model: 1 client, {arguments.requests} requests, medians of {SHADOW_ROUNDS} interleaved rounds\n")
    costs = result["model_p50_ms"]
    print(f"the model alone, one image, batch 1, p50: int8 {costs['model_int8.tflite']:.4f} ms, float "
          f"{costs['model_f32.tflite']:.4f} ms (float / int8 {costs['model_f32.tflite'] / costs['model_int8.tflite']:.2f}×)\n")
    print("| --shadow-rate | p50 ms | requests/s | server CPU ms per request | CPU vs rate 0 |\n|---|---:|---:|---:|---:|")
    base_cpu = result["shadow"]["0"]["cpu_ms_per_request"]
    for rate, figures in result["shadow"].items():
        print(f"| {rate} | {figures['p50_ms']:.2f} | {figures['requests_per_s']:,.0f} | "
              f"{figures['cpu_ms_per_request']:.3f} | {figures['cpu_ms_per_request'] / base_cpu:.2f}× |")
    print(f"\n| start | to ready, s | idle RSS once ready, MiB |\n|---|---:|---:|")
    for name, seconds in result["time_to_ready_s"].items():
        print(f"| {name} | {seconds:.2f} | {result['idle_rss_after_start_mib'][name]:.1f} |")
    print("\n| memory | MiB |\n|---|---:|")
    print(f"| serve, idle after a default start (full self-check) | "
          f"{result['idle_rss_after_start_mib']['default (full self-check, 10,000 images)']:.1f} |")
    print(f"| serve, idle after start with --self-check-images 0, --shadow-rate 0 | {result['idle_rss_mib']:.1f} |")
    print(f"| serve, after the load (peak) | {result['rss_after_load_mib']:.1f} ({result['peak_rss_mib']:.1f}) |")
    print(f"| `predict` one PNG, peak | {result['predict_peak_rss_mib']:.1f} |")
    default_idle = result["idle_rss_after_start_mib"]["default (full self-check, 10,000 images)"]
    print(f"\nidle RSS after a default start / predict's peak: {default_idle / result['predict_peak_rss_mib']:.2f}×")
    output = arguments.output or arguments.artifacts / "benchmarks" / "serve.json"
    atomic_files.write_text_atomically(output, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
