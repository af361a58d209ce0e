"""Our runtime against the bare interpreter (and Keras), side by side in one run, on one core.

    .venv/bin/python benchmarks/bench_runtime.py [--artifacts artifacts] [--repeats 5]

Reports ratios, because absolute figures on a shared machine move from run to run; each pair is
measured interleaved so that both sides see the same machine. Targets (issue #3): throughput
>= 0.9x the bare interpreter at the same batch size; cold start and peak RSS <= 1.25x the bare
interpreter's. The numpy engine (issue #11), fed the same int8 batches: throughput >= 1x LiteRT's
reference kernels (its bit-exact twin), reported against LiteRT's default kernels (aim: 0.1x);
cold start and peak RSS <= 1.0x bare LiteRT's. `mnist-edge predict digit.png` as a device runs it
(issue #22: the installed wheel, a shell's environment, outside the checkout), in paired runs
against a bare script: <= 1.10x its wall time and peak RSS, paired medians, reported with their
spread and with the CPU-time ratio, which a loaded machine disturbs less. Exits non-zero when a
target is missed.
"""

import argparse
import compileall
import json
import os
import pathlib
import subprocess
import sys
import time

# One core means one BLAS thread: OpenBLAS would otherwise start a thread per CPU before the
# affinity below is set, and the extra threads would only contend for the one core.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from edge_runtime import atomic_files, classifier, errors, evaluation, manifest, preprocessing  # noqa: E402

# Programs that each go from process start to one prediction, then print their peak RSS (KiB).
COLD_START_COMMANDS = {
    "edge_runtime": lambda tflite, keras: ["-m", "edge_runtime.cli.cold_start", str(tflite), "", "1"],
    "bare LiteRT": lambda tflite, keras: [str(REPO_ROOT / "benchmarks" / "bare_interpreter_cold_start.py"), str(tflite)],
    "numpy engine": lambda tflite, keras: [str(REPO_ROOT / "benchmarks" / "bare_interpreter_cold_start.py"), str(tflite),
                                           "numpy"],
    "Keras": lambda tflite, keras: ["-m", "compare.keras_cold_start", str(keras)],
}


def one_core():
    """Pin this process (and the children it starts) to a single CPU."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})


def cold_start(command, tflite_path, keras_path):
    started = time.perf_counter()
    child = subprocess.run([sys.executable, *command(tflite_path, keras_path)],
                           capture_output=True, text=True, cwd=REPO_ROOT,
                           env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    elapsed = time.perf_counter() - started
    if child.returncode != 0:
        raise RuntimeError(child.stderr.strip().splitlines()[-1])
    return elapsed, int(child.stdout.split()[-1]) / 1024.0


def litert_interpreter(path, kernels="default"):
    """LiteRT with its default (XNNPACK/optimized) or its reference kernels."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    if kernels == "reference":
        return Interpreter(model_path=str(path), num_threads=1,
                           experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    return Interpreter(model_path=str(path), num_threads=1)


def numpy_engine(path):
    from edge_runtime.engine.interpreter import Interpreter

    return Interpreter(model_path=str(path), num_threads=1)


def bare_throughput(path, quantized_batches, make_interpreter=litert_interpreter):
    """Images per second of a plain interpreter loop fed already-quantized int8 batches."""
    interpreter = make_interpreter(path)
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    interpreter.resize_tensor_input(input_index, list(quantized_batches[0].shape))
    interpreter.allocate_tensors()
    images = sum(len(batch) for batch in quantized_batches)
    started = time.perf_counter()
    for batch in quantized_batches:
        if batch.shape[0] != quantized_batches[0].shape[0]:
            interpreter.resize_tensor_input(input_index, list(batch.shape))
            interpreter.allocate_tensors()
        interpreter.set_tensor(input_index, batch)
        interpreter.invoke()
        interpreter.get_tensor(output_index)
    return images / (time.perf_counter() - started)


def our_throughput(model, images, batch_size):
    """Images per second of Classifier.predict on raw uint8 images: scaling and quantizing included."""
    started = time.perf_counter()
    model.predict(images, batch_size=batch_size)
    return len(images) / (time.perf_counter() - started)


def batch1_latency(model, tflite_path, image, repeats, calls=2000):
    """Median µs per call of Classifier.predict on one uint8 image and of a bare LiteRT loop that
    quantizes, runs and dequantizes the same image with numpy, interleaved."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tflite_path), num_threads=1)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero_point = source["quantization"]
    out_scale, out_zero_point = target["quantization"]

    def bare(pixels):
        quantized = np.clip(np.round(pixels.astype(np.float32) / 255 / scale) + zero_point, -128, 127)
        interpreter.set_tensor(source["index"], quantized.astype(np.int8).reshape(source["shape"]))
        interpreter.invoke()
        return ((interpreter.get_tensor(target["index"]).astype(np.float32) - out_zero_point) * out_scale).argmax()

    sides = {"edge_runtime": model.predict, "bare LiteRT": bare}
    timings = {name: [] for name in sides}
    for function in sides.values():
        for _ in range(200):
            function(image)
    for _ in range(repeats):
        for name, function in sides.items():
            started = time.perf_counter()
            for _ in range(calls):
                function(image)
            timings[name].append((time.perf_counter() - started) / calls * 1e6)
    return {name: float(np.median(values)) for name, values in timings.items()}


# What a device's shell gives a process: no OPENBLAS_NUM_THREADS, no PYTHONPATH, nothing of ours.
DEVICE_ENVIRONMENT_KEYS = ("PATH", "HOME", "LANG", "TERM", "USER")


def device_venv(directory, wheel):
    """A fresh venv in `directory` with `wheel` installed as DEPLOY.md says ([edge] extra); return its bin/.

    Kept between runs while the wheel's files are the same (pip's install takes a while); the venv
    of an older wheel is removed.
    """
    import hashlib
    import shutil
    import zipfile

    digest = hashlib.sha256()
    with zipfile.ZipFile(wheel) as archive:  # its files, not the zip's own bytes: those carry build times
        for name in sorted(archive.namelist()):
            digest.update(name.encode() + b"\0" + archive.read(name))
    venv = directory / f"device-venv-{digest.hexdigest()[:12]}"
    if not (venv / "bin" / "mnist-edge").exists():
        for older in directory.glob("device-venv-*"):
            shutil.rmtree(older)
        print(f"  making a device venv in {venv} (pip install {wheel.name}[edge])", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        f"{wheel}[edge]"], check=True)
    return venv / "bin"


def timed_process(command, cwd, environment):
    """Run `command` to its end through benchmarks/measured.py; return (wall seconds, CPU seconds,
    peak RSS in MiB) of the command alone."""
    child = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "measured.py"), *command],
                           cwd=cwd, env=environment, capture_output=True, text=True)
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: status {child.returncode}: {child.stderr.strip()[-300:]}")
    wall, cpu, peak_kib = child.stdout.split()[-3:]
    return float(wall), float(cpu), int(peak_kib) / 1024.0


def predict_png_as_on_a_device(tflite_path, digit, pairs):
    """`mnist-edge predict MODEL digit.png` as a device runs it (the wheel installed in a fresh venv,
    its console script, started from a folder outside the checkout, with a shell's environment)
    against the bare script run by the same venv's python. Paired: A B, A B, ... `pairs` times, on
    this process's one core. Returns the per-pair ratios' median and quartiles, and each side's medians.
    """
    import shutil
    import tempfile

    from PIL import Image

    from export import bundle

    environment = {key: os.environ[key] for key in DEVICE_ENVIRONMENT_KEYS if key in os.environ}
    cache = REPO_ROOT / "artifacts" / "benchmarks"
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="device-") as scratch:
        scratch = pathlib.Path(scratch)
        wheel_dir = scratch / "wheel"
        wheel_dir.mkdir()
        bin_dir = device_venv(cache, bundle.build_wheel(wheel_dir))
        # The model in a bundle folder with its manifest, as on a device: predict checks its sha256 there.
        (scratch / "bundle").mkdir()
        model = shutil.copy(tflite_path, scratch / "bundle" / tflite_path.name)
        shutil.copy(tflite_path.parent / manifest.MANIFEST_NAME, scratch / "bundle" / manifest.MANIFEST_NAME)
        png = scratch / "digit.png"
        Image.fromarray(255 - digit).resize((280, 280), Image.BILINEAR).save(png)
        bare = shutil.copy(REPO_ROOT / "benchmarks" / "bare_predict_png.py", scratch / "bare_predict_png.py")
        commands = {
            "CLI": [str(bin_dir / "mnist-edge"), "predict", str(model), str(png)],
            "bare script": [str(bin_dir / "python"), str(bare), str(model), str(png)],
        }
        for command in commands.values():  # once each before timing: the files are in the page cache
            timed_process(command, scratch, environment)
        runs = {name: [] for name in commands}
        for _ in range(pairs):
            for name, command in commands.items():
                runs[name].append(timed_process(command, scratch, environment))
    cli, bare_script = np.array(runs["CLI"]), np.array(runs["bare script"])  # (pairs, 3): wall, CPU, RSS

    def spread(ratios):
        return {"median": float(np.median(ratios)), "q1": float(np.quantile(ratios, 0.25)),
                "q3": float(np.quantile(ratios, 0.75)), "min": float(ratios.min()), "max": float(ratios.max())}

    return {
        "pairs": pairs,
        "seconds": {"CLI": float(np.median(cli[:, 0])), "bare script": float(np.median(bare_script[:, 0]))},
        "cpu_seconds": {"CLI": float(np.median(cli[:, 1])), "bare script": float(np.median(bare_script[:, 1]))},
        "peak_rss_mib": {"CLI": float(np.median(cli[:, 2])), "bare script": float(np.median(bare_script[:, 2]))},
        # Per pair, CLI / bare script: wall time (what the target is on), CPU time (steadier on a
        # loaded machine: waiting for the core does not count), peak RSS.
        "time_ratio": spread(cli[:, 0] / bare_script[:, 0]),
        "cpu_ratio": spread(cli[:, 1] / bare_script[:, 1]),
        "rss_ratio_median": float(np.median(cli[:, 2] / bare_script[:, 2])),
        "load_average": os.getloadavg(),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=pathlib.Path, default=REPO_ROOT / "artifacts")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--pairs", type=int, default=21, help="A/B pairs of the device-way `predict digit.png` runs")
    parser.add_argument("--output", type=pathlib.Path, default=None)
    arguments = parser.parse_args(argv)
    one_core()
    try:
        document = manifest.read_manifest(arguments.artifacts / manifest.MANIFEST_NAME)
    except errors.EdgeRuntimeError as error:
        print(f"error: {error}; run 'make train export' first", file=sys.stderr)
        return 1
    tflite_path = arguments.artifacts / next(name for name in document.files_with_role(manifest.ROLE_INT8_MODEL)
                                             if name.endswith(".tflite"))
    from compare import runs

    keras_path = runs.source_model_path(arguments.artifacts, document)
    test_set = arguments.artifacts / document.file_with_role(manifest.ROLE_TEST_SET)
    images = evaluation.load_test_set(test_set, document.input_shape, manifest=document)[0]

    model = classifier.Classifier.load(tflite_path, backend="litert", threads=1)
    model.run_raw(np.zeros((arguments.batch_size, *model.input_shape), np.float32))  # warm up before timing
    quantized_input = preprocessing.quantize(preprocessing.to_model_input(images, model.input_shape),
                                             model.input.scale, model.input.zero_point, model.input.dtype)
    batches = [quantized_input[start:start + arguments.batch_size]
               for start in range(0, len(quantized_input), arguments.batch_size)]
    ours, bare, engine, reference = [], [], [], []
    for _ in range(arguments.repeats):
        bare.append(bare_throughput(tflite_path, batches))
        ours.append(our_throughput(model, images, arguments.batch_size))
        engine.append(bare_throughput(tflite_path, batches, numpy_engine))
        reference.append(bare_throughput(tflite_path, batches, lambda path: litert_interpreter(path, "reference")))

    # Byte-compile the runtime as pip does when it installs the wheel, so that the children do not
    # pay for compiling it where PYTHONDONTWRITEBYTECODE is set (the interpreters come compiled).
    compileall.compile_dir(str(REPO_ROOT / "edge_runtime"), quiet=1)
    latency = batch1_latency(model, tflite_path, images[0], arguments.repeats)
    cli = predict_png_as_on_a_device(tflite_path, images[0], arguments.pairs)
    cold = {name: [] for name in COLD_START_COMMANDS}
    for _ in range(arguments.repeats):
        for name, command in COLD_START_COMMANDS.items():
            cold[name].append(cold_start(command, tflite_path, keras_path))

    result = {
        "model": str(tflite_path),
        "images": int(len(images)),
        "batch_size": arguments.batch_size,
        "repeats": arguments.repeats,
        "throughput_images_per_s": {"edge_runtime": float(np.median(ours)), "bare LiteRT": float(np.median(bare)),
                                    "numpy engine": float(np.median(engine)),
                                    "LiteRT reference kernels": float(np.median(reference))},
        "cold_start_s": {name: float(np.median([s for s, _ in runs])) for name, runs in cold.items()},
        "peak_rss_mib": {name: float(np.median([r for _, r in runs])) for name, runs in cold.items()},
    }
    ratios = {
        "throughput (ours / bare, >= 0.90)": result["throughput_images_per_s"]["edge_runtime"] / result["throughput_images_per_s"]["bare LiteRT"],
        "cold start (ours / bare, <= 1.25)": result["cold_start_s"]["edge_runtime"] / result["cold_start_s"]["bare LiteRT"],
        "peak RSS (ours / bare, <= 1.25)": result["peak_rss_mib"]["edge_runtime"] / result["peak_rss_mib"]["bare LiteRT"],
        "cold start (Keras / ours)": result["cold_start_s"]["Keras"] / result["cold_start_s"]["edge_runtime"],
        "peak RSS (Keras / ours)": result["peak_rss_mib"]["Keras"] / result["peak_rss_mib"]["edge_runtime"],
        "numpy engine throughput (/ LiteRT reference kernels, >= 1.00)":
            result["throughput_images_per_s"]["numpy engine"] / result["throughput_images_per_s"]["LiteRT reference kernels"],
        "numpy engine throughput (/ LiteRT default kernels, aim 0.10)":
            result["throughput_images_per_s"]["numpy engine"] / result["throughput_images_per_s"]["bare LiteRT"],
        "numpy engine cold start (/ bare LiteRT, <= 1.00)": result["cold_start_s"]["numpy engine"] / result["cold_start_s"]["bare LiteRT"],
        "numpy engine peak RSS (/ bare LiteRT, <= 1.00)": result["peak_rss_mib"]["numpy engine"] / result["peak_rss_mib"]["bare LiteRT"],
    }
    result["batch1_latency_us"] = latency
    result["predict_png"] = cli
    ratios["batch-1 latency (Classifier.predict / bare loop, <= 1.10)"] = latency["edge_runtime"] / latency["bare LiteRT"]
    ratios["predict PNG as on a device (CLI / bare script, paired median, <= 1.10)"] = cli["time_ratio"]["median"]
    ratios["predict PNG peak RSS (CLI / bare script, paired median, <= 1.10)"] = cli["rss_ratio_median"]
    result["ratios"] = ratios
    targets_met = (ratios["throughput (ours / bare, >= 0.90)"] >= 0.90
                   and ratios["cold start (ours / bare, <= 1.25)"] <= 1.25
                   and ratios["peak RSS (ours / bare, <= 1.25)"] <= 1.25
                   and ratios["numpy engine throughput (/ LiteRT reference kernels, >= 1.00)"] >= 1.0
                   and ratios["numpy engine cold start (/ bare LiteRT, <= 1.00)"] <= 1.0
                   and ratios["numpy engine peak RSS (/ bare LiteRT, <= 1.00)"] <= 1.0
                   and all(value <= 1.10 for name, value in ratios.items() if "<= 1.10" in name))
    result["targets_met"] = targets_met

    print(f"one core, int8 TFLite, {len(images)} images, batch {arguments.batch_size}, median of {arguments.repeats}\n")
    throughput = result["throughput_images_per_s"]
    print("| | edge_runtime | bare LiteRT | numpy engine | Keras |\n|---|---:|---:|---:|---:|")
    print(f"| throughput, images/s | {throughput['edge_runtime']:,.0f} | {throughput['bare LiteRT']:,.0f} "
          f"(reference kernels: {throughput['LiteRT reference kernels']:,.0f}) | {throughput['numpy engine']:,.0f} | — |")
    print("| cold start to first prediction, s | " + " | ".join(f"{result['cold_start_s'][n]:.3f}" for n in COLD_START_COMMANDS) + " |")
    print("| peak RSS, MiB | " + " | ".join(f"{result['peak_rss_mib'][n]:.1f}" for n in COLD_START_COMMANDS) + " |")
    print(f"| batch-1 latency, µs | {latency['edge_runtime']:.1f} | {latency['bare LiteRT']:.1f} | — | — |")
    print(f"| `mnist-edge predict digit.png` as on a device, s / MiB | {cli['seconds']['CLI']:.3f} / "
          f"{cli['peak_rss_mib']['CLI']:.1f} | {cli['seconds']['bare script']:.3f} / {cli['peak_rss_mib']['bare script']:.1f} "
          "(a short script) | — | — |")
    print(f"\n`predict digit.png` as on a device: the wheel in a fresh venv, run from outside the checkout with a "
          f"shell's environment, {cli['pairs']} A/B pairs on one core, load average "
          f"{', '.join(f'{value:.1f}' for value in cli['load_average'])}. CLI / bare script, per pair:")
    for name, key in (("wall time", "time_ratio"), ("CPU time", "cpu_ratio")):
        spread = cli[key]
        print(f"  {name:<9} median {spread['median']:.3f}x, interquartile range {spread['q1']:.3f}-{spread['q3']:.3f}x, "
              f"range {spread['min']:.3f}-{spread['max']:.3f}x")
    print()
    for name, value in ratios.items():
        print(f"{name:<72} {value:6.2f}x")
    print("\ntargets met" if targets_met else "\nTARGETS MISSED")
    output = arguments.output or arguments.artifacts / "benchmarks" / "runtime.json"
    atomic_files.write_text_atomically(output, json.dumps(result, indent=2) + "\n")
    return 0 if targets_met else 1


if __name__ == "__main__":
    sys.exit(main())
