"""The emulated Raspberry Pi check: install the deploy bundle in an arm64 rootfs, run it, compare with x86.

Run by pi/check.sh, which builds (or reuses) the rootfs and mounts /proc, /sys and /dev in it;
this script only runs commands in it with `chroot` (qemu-user through binfmt_misc does the rest).

On the "device" it does what the README tells the user: unpack the bundle, create a venv, `pip
install` the bundle's wheel with an extra, run `python -m edge_runtime eval|predict|bench`. It does
so for LiteRT (numpy 2, with onnxruntime beside it for the int8 ONNX model) and for tflite-runtime
2.14 (a venv over Debian's numpy 1.24, as on Raspberry Pi OS), with QEMU_CPU=cortex-a72 (Pi 4) and
cortex-a76 (Pi 5). Every device command has an x86 twin run here with the same arguments and the
same interpreter version (the workstation venv; a throwaway x86 venv for tflite-runtime 2.14).

What must hold, else exit 1 with one line per mismatch:
- eval passes on the device, and each model's accuracy equals the x86 accuracy exactly, with the
  same top-1 label on every image (the int8 TFLite model on the full 10,000 images on both CPUs);
- with the reference kernels (BUILTIN_REF: plain integer C++, no SIMD) the int8 outputs are
  bit-identical to x86: the emulator computes integers exactly as the hardware does;
- with the default kernels (XNNPACK, which must be active) the int8 outputs may differ from x86
  by one quantization step in a few values, and by no more (--max-steps). XNNPACK has separate
  arm64 NEON and x86 kernels; we attribute the differences to their rounding, not to the emulator,
  because the reference kernels are bit-identical and both CPU models (different XNNPACK kernels)
  give the very same outputs — but that is an inference: no real Pi has confirmed it;
- `predict` on PNG photos of digits (dark ink on light paper, upscaled) gives the x86 labels;
- the emulated /proc/cpuinfo names the CPU asked for.

Reported: each eval process's peak RSS (VmHWM) beside its x86 twin's (under emulation it includes
qemu and its translation cache) and `bench`'s cold-start RSS. Speed under emulation means nothing.
"""

import argparse
import concurrent.futures
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
HOME = "/home/pi"  # the device user's home inside the rootfs; wiped at the start of every run
PIP_CACHE = "/var/cache/mnist-edge-pip"  # bind-mounted by pi/rootfs.sh mount_rootfs
BUNDLE = "mnist-edge-bundle"
CPU_PART = {"cortex-a72": "0xd08", "cortex-a76": "0xd0b"}  # "CPU part" in the emulated /proc/cpuinfo
CPU_NAMES = {"cortex-a72": "Pi 4", "cortex-a76": "Pi 5"}
SUBSET = 2000  # images for the second-line paths (tflite-runtime, ONNX on the second CPU)
# On a subset the drop against the float model's 10k accuracy means nothing: equality with x86 is checked.
SUBSET_FLAGS = "--tolerance 100"
FIDELITY_IMAGES = 1000
# The README's installs, one venv per interpreter family: (name, venv flags, extras, lock file).
VENVS = (
    ("litert", "", "edge,onnx", "device-litert.lock"),
    ("tflite-runtime", "--system-site-packages", "tflite-runtime", "device-tflite-runtime.lock"),
)

# `python -m edge_runtime ARGS`, then the process's peak resident memory on stderr: VmHWM, as
# edge_runtime.benchmarking reads it. Under qemu-user it is the emulator process's.
PEAK_RSS_WRAPPER = r"""
import runpy, sys
sys.argv = ["edge_runtime"] + sys.argv[1:]
try:
    runpy.run_module("edge_runtime", run_name="__main__", alter_sys=True)
finally:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                print("peak-rss-kib", line.split()[1], file=sys.stderr, flush=True)
"""

# The int8 model through the interpreter's reference kernels (no XNNPACK, no SIMD paths).
FIDELITY_SCRIPT = r"""
import pathlib, sys
import numpy as np
from edge_runtime import evaluation, preprocessing
interpreter_name, count, output = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if interpreter_name == "litert":
    from ai_edge_litert import interpreter as module
else:
    import tflite_runtime.interpreter as module
images, _ = evaluation.load_test_set("test_set.npz")
interpreter = module.Interpreter(model_path="model_int8.tflite", num_threads=1,
                                 experimental_op_resolver_type=module.OpResolverType.BUILTIN_REF)
(entry,), (exit_,) = interpreter.get_input_details(), interpreter.get_output_details()
batch = preprocessing.quantize(preprocessing.to_model_input(images[:count], entry["shape"][1:]), *entry["quantization"])
interpreter.resize_tensor_input(entry["index"], list(batch.shape))
interpreter.allocate_tensors()
interpreter.set_tensor(entry["index"], batch)
interpreter.invoke()
pathlib.Path(output).parent.mkdir(parents=True, exist_ok=True)
np.save(output, interpreter.get_tensor(exit_["index"]))
"""


class CheckFailed(Exception):
    pass


def log(message):
    print(f"pi-check: {message}", file=sys.stderr, flush=True)


def quote(text):
    return "'" + str(text).replace("'", "'\"'\"'") + "'"


def last_line(result):
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("peak-rss-kib ")]
    return (lines or ["no output"])[-1]


def peak_rss_mib(stderr):
    lines = [line for line in stderr.splitlines() if line.startswith("peak-rss-kib ")]
    return int(lines[-1].split()[1]) / 1024.0 if lines else None


class Device:
    """Runs shell commands inside the mounted arm64 rootfs, as the device's user would."""

    def __init__(self, rootfs):
        self.rootfs = pathlib.Path(rootfs)
        self.home = self.rootfs / HOME.lstrip("/")

    def run(self, script, cpu, timeout=1500):
        environment = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": HOME, "USER": "pi", "LANG": "C.UTF-8", "QEMU_CPU": cpu,
            "MNIST_EDGE_NATIVE_LOG": "1",  # XNNPACK's start-up line is the evidence that it runs
            # pip needs the host's CA bundle (it may hold a local proxy's certificate).
            "PIP_CERT": "/etc/ssl/host-ca-bundle.crt", "SSL_CERT_FILE": "/etc/ssl/host-ca-bundle.crt",
            "PIP_CACHE_DIR": PIP_CACHE, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1",
            "PIP_DEFAULT_TIMEOUT": "60",
        }
        return timed_run(["chroot", str(self.rootfs), "/bin/bash", "-c", f"set -e; cd ~; {script}"],
                         environment, timeout, f"[{cpu}] {script[:150]}")


def timed_run(command, environment, timeout, what, cwd=None):
    started = time.monotonic()
    try:
        result = subprocess.run(command, env=environment, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"{what}: timed out after {timeout} s") from None
    result.seconds = time.monotonic() - started
    return result


def write_digit_images(test_set, directory):
    """PNG photos of real MNIST test digits as a user has them: dark ink on light paper, 4× size, a margin.

    Returns {file name: true label}, one image per digit 0-9 (its first test image).
    """
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    with np.load(test_set) as archive:
        images, labels = archive["x_test"], archive["y_test"]
    truth = {}
    for digit in range(10):
        index = int(np.flatnonzero(labels == digit)[0])
        ink = Image.fromarray(255 - images[index]).resize((112, 112), Image.BICUBIC)
        sheet = Image.new("L", (160, 150), 255)
        sheet.paste(ink, (20, 14))
        name = f"digit-{index:05d}.png"
        sheet.save(directory / name)
        truth[name] = int(labels[index])
    return truth


def plan(cpus, outputs, with_predict, with_bench, full_readme_eval=False):
    """The device commands, each with an x86 twin: [(key, cpu, venv, kind, edge_runtime arguments)].

    On every CPU: the int8 TFLite model through LiteRT on all 10,000 images (from a copy of the
    bundle without model_f32.tflite: eval always runs the float reference beside it, and under
    emulation the float model costs several times the int8 one); the README's eval of the whole
    bundle (float reference, int8 TFLite and ONNX models) and the tflite-runtime eval on the first
    2,000 images — all 10,000 for the README's eval on the first CPU with `full_readme_eval`; the
    reference-kernel fidelity runs; predict; and bench on the first CPU.
    """
    tasks = []
    for position, cpu in enumerate(cpus):
        out = f"{outputs}/{cpu}"
        tasks.append((f"{cpu}/eval-int8", cpu, "litert", "eval",
                      f"eval int8-only/model_int8.tflite --allow-missing --json --save-outputs {out}/eval-int8"))
        subset = "" if full_readme_eval and position == 0 else f"--test-set subset.npz {SUBSET_FLAGS} "
        tasks.append((f"{cpu}/eval-bundle", cpu, "litert", "eval",
                      f"eval {BUNDLE}/ {subset}--json --save-outputs {out}/eval-bundle"))
        tasks.append((f"{cpu}/eval-tflite-runtime", cpu, "tflite-runtime", "eval",
                      f"eval {BUNDLE}/ --backend tflite-runtime --test-set subset.npz {SUBSET_FLAGS} --json "
                      f"--save-outputs {out}/eval-tflite-runtime"))
        for venv in ("litert", "tflite-runtime"):
            tasks.append((f"{cpu}/fidelity-{venv}", cpu, venv, "fidelity", f"{venv} {FIDELITY_IMAGES} ../{out}/fidelity-{venv}.npy"))
        if with_predict:
            tasks.append((f"{cpu}/predict", cpu, "litert", "predict", f"predict {BUNDLE}/model_int8.tflite digits/ --json"))
        if with_bench and position == 0:
            tasks.append((f"{cpu}/bench", cpu, "litert", "bench",
                          f"bench {BUNDLE}/model_int8.tflite --runs 20 --test-set bench.npz --json"))
    return tasks


def estimated_cost(task):
    """Relative emulated run time of a task, to start the longest first."""
    _, _, _, kind, arguments = task
    if kind == "eval":
        return 10 if "subset.npz" not in arguments and "int8-only" not in arguments else 5 if "int8-only" in arguments else 4
    return {"bench": 3, "fidelity": 2, "predict": 1}[kind]


def command_for(kind, arguments, python):
    """The shell command for a task, given the python to run it with."""
    if kind == "eval":
        # One interpreter thread: the results are the same, and two emulated evals share two cores
        # without qemu's threads contending (the README's eval with the default took 1.5× longer).
        return f"{python} -c {quote(PEAK_RSS_WRAPPER)} {arguments} --threads 1"
    if kind == "fidelity":
        return f"cd {BUNDLE} && {python} -c {quote(FIDELITY_SCRIPT)} {arguments}"
    return f"{python} -m edge_runtime {arguments}"


def prepare_home(home, bundle_tarball, scratch):
    """Lay out what the device user has: the bundle tarball, the lock files, digits, test subsets."""
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    shutil.copy(bundle_tarball, home / f"{BUNDLE}.tar.gz")
    for _, _, _, lock in VENVS:
        shutil.copy(HERE / lock, home / lock)
    for name in ("digits", "subset.npz", "bench.npz"):
        source = scratch / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, home / name)


def make_layout(directory, bundle_dir):
    """The extra files every task reads, beside an unpacked bundle (device home or x86 scratch)."""
    with np.load(bundle_dir / "test_set.npz") as archive:
        images, labels = archive["x_test"], archive["y_test"]
    np.savez_compressed(directory / "subset.npz", x_test=images[:SUBSET], y_test=labels[:SUBSET])
    np.savez_compressed(directory / "bench.npz", x_test=images[:256], y_test=labels[:256])
    int8_only = directory / "int8-only"
    int8_only.mkdir(exist_ok=True)
    for name in ("model_int8.tflite", "manifest.json", "test_set.npz"):
        shutil.copy(bundle_dir / name, int8_only / name)


def install_on_device(device, wheel_name):
    """Unpack the bundle and create the venvs as the README says (pinned by a constraints file)."""
    device.run(f"tar xzf {BUNDLE}.tar.gz && mkdir -p int8-only && "
               f"cp {BUNDLE}/model_int8.tflite {BUNDLE}/manifest.json {BUNDLE}/test_set.npz int8-only/",
               "cortex-a72", timeout=120)
    installs = {}
    for name, flags, extras, lock in VENVS:
        venv = f"~/venv-{name}"
        log(f"installing [{extras}] into {venv} on the device")
        result = device.run(f"python3 -m venv {flags} {venv} && . {venv}/bin/activate && "
                            f"pip install --quiet -c {lock} \"{BUNDLE}/{wheel_name}[{extras}]\" && pip list --format=freeze && "
                            f"python -c 'import numpy; print(\"numpy-at\", numpy.__version__, numpy.__file__)'",
                            "cortex-a72", timeout=900)
        if result.returncode != 0:
            raise CheckFailed(f"pip install of [{extras}] on the device failed: {last_line(result)}")
        frozen = dict(line.split("==", 1) for line in result.stdout.splitlines() if "==" in line)
        numpy_line = next(line for line in result.stdout.splitlines() if line.startswith("numpy-at ")).split()
        installs[name] = {"seconds": round(result.seconds, 1), "packages": frozen, "numpy": numpy_line[1],
                          "numpy_from": "Debian" if numpy_line[2].startswith("/usr/lib/python3/") else "pip"}
        if {"tensorflow", "tensorflow-cpu", "keras"} & {key.lower() for key in frozen}:
            raise CheckFailed(f"the [{extras}] install pulled in TensorFlow or Keras: {sorted(frozen)}")
    return installs


def install_x86_tflite_runtime(scratch, wheel):
    """tflite-runtime 2.14 on x86 too, so that its device outputs are compared with the same version."""
    venv = scratch / "x86-venv-tflite-runtime"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    result = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
                             "-c", str(HERE / "device-tflite-runtime.lock"), f"{wheel}[tflite-runtime]"],
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise CheckFailed(f"x86 venv with tflite-runtime 2.14: pip failed: {last_line(result)}")
    return venv / "bin" / "python"


def run_task(task, runner, python, home):
    key, cpu, venv, kind, arguments = task
    result = runner(command_for(kind, arguments, python[venv]), cpu)
    if result.returncode != 0:
        raise CheckFailed(f"{key}{'' if cpu else ' (x86)'}: exit {result.returncode}: {last_line(result)}")
    record = {"key": key, "seconds": round(result.seconds, 1), "rss_mib": peak_rss_mib(result.stderr),
              "xnnpack": "XNNPACK delegate" in result.stderr}
    if kind in ("eval", "predict", "bench"):
        record["json"] = json.loads(result.stdout)
    return record


def compare_outputs(ours, theirs):
    """(identical, values differing, images differing, largest difference in output steps)."""
    if ours.shape != theirs.shape or ours.dtype != theirs.dtype:
        return False, None, None, float("inf")
    difference = np.abs(ours.astype(np.float64) - theirs.astype(np.float64))
    return (not difference.any(), int(np.count_nonzero(difference)), int(np.count_nonzero(difference.any(axis=1))),
            float(difference.max()))


def compare(tasks, device_results, x86_results, device_outputs, x86_outputs, max_steps, truth):
    rows, notes, failures = [], [], []
    for key, cpu, venv, kind, _ in tasks:
        ours, theirs = device_results[key], x86_results[key]
        if kind == "eval":
            if not ours["xnnpack"]:  # every eval runs a .tflite model (the float reference at least)
                failures.append(f"{key}: no XNNPACK delegate on the device (is /sys mounted?)")
            x86_rows = {(row["model"], row["backend"]): row for row in theirs["json"]["results"]}
            for row in ours["json"]["results"]:
                twin = x86_rows[(row["model"], row["backend"])]
                name = f"{row['model']}.{row['backend']}.npy"
                directory = key.split("/", 1)[1]
                mine = np.load(device_outputs / cpu / directory / name)
                reference = np.load(x86_outputs / cpu / directory / name)
                identical, values, images, steps = compare_outputs(mine, reference)
                labels_equal = mine.shape == reference.shape and bool(np.array_equal(mine.argmax(1), reference.argmax(1)))
                rows.append({
                    "cpu": cpu, "backend": row["backend"], "model": row["model"], "images": row["images"],
                    "accuracy": row["accuracy"], "x86_accuracy": twin["accuracy"], "top1_identical": labels_equal,
                    "outputs_identical": identical, "values_differing": values, "images_differing": images,
                    "max_difference": steps, "dtype": str(mine.dtype),
                    "xnnpack": ours["xnnpack"] if row["model"].endswith(".tflite") else None,
                    "rss_mib": ours["rss_mib"], "x86_rss_mib": theirs["rss_mib"], "task": key,
                    "seconds": ours["seconds"],
                })
                what = f"{row['model']} with {row['backend']} on {cpu} ({row['images']} images)"
                if row["accuracy"] != twin["accuracy"]:
                    failures.append(f"{what}: accuracy {100 * row['accuracy']:.2f}% != x86 {100 * twin['accuracy']:.2f}%")
                if not labels_equal:
                    failures.append(f"{what}: top-1 labels differ from x86")
                limit = max_steps if mine.dtype == np.int8 else 0.0
                if steps > limit:
                    failures.append(f"{what}: raw outputs differ from x86 by up to {steps:g} "
                                    f"{'quantization steps' if mine.dtype == np.int8 else ''} (allowed {limit:g})")
        elif kind == "fidelity":
            mine = np.load(device_outputs / cpu / f"fidelity-{venv}.npy")
            reference = np.load(x86_outputs / cpu / f"fidelity-{venv}.npy")
            identical, values, _, steps = compare_outputs(mine, reference)
            notes.append(f"reference kernels, {venv}, {cpu}: int8 outputs of {len(mine)} images "
                         + ("bit-identical to x86" if identical else f"DIFFER from x86 in {values} values (up to {steps:g})"))
            if not identical:
                failures.append(f"{key}: with reference kernels the int8 outputs differ from x86 in {values} values: "
                                f"the emulator miscomputes (qemu >= 10 needed)")
        elif kind == "predict":
            mine = {pathlib.Path(p["file"]).name: p["label"] for p in ours["json"]["predictions"]}
            reference = {pathlib.Path(p["file"]).name: p["label"] for p in theirs["json"]["predictions"]}
            right = sum(mine.get(name) == label for name, label in truth.items())
            notes.append(f"predict on {cpu}: {len(mine)} PNG digits -> {' '.join(str(mine[n]) for n in sorted(mine))} "
                         f"({right}/{len(truth)} right; x86: {'same labels' if mine == reference else 'DIFFERENT'})")
            if mine != reference:
                failures.append(f"predict on {cpu} gave {mine}, x86 gave {reference}")
        elif kind == "bench":
            notes.append(f"bench on {cpu}: cold start to first prediction, peak RSS {ours['json']['peak_rss_mib']:.1f} MiB "
                         f"emulated, {theirs['json']['peak_rss_mib']:.1f} MiB on x86 (timings under emulation mean nothing)")
    return rows, notes, failures


def print_summary(rows, notes, installs, timings, max_steps):
    def outputs(row):
        if row["outputs_identical"]:
            return "bit-identical"
        return f"{row['values_differing']} values in {row['images_differing']} images differ by <= {row['max_difference']:g}"

    header = ("CPU", "backend", "model", "images", "accuracy", "= x86", "top-1 = x86", "raw outputs vs x86",
              "XNNPACK", "peak RSS emulated / x86")
    table = [header]
    for row in rows:
        table.append((
            f"{row['cpu']} ({CPU_NAMES[row['cpu']]})", row["backend"], row["model"], f"{row['images']:,}",
            f"{100 * row['accuracy']:.2f}%", "yes" if row["accuracy"] == row["x86_accuracy"] else "NO",
            "yes" if row["top1_identical"] else "NO", f"{outputs(row)} ({row['dtype']})",
            {True: "yes", False: "NO", None: "-"}[row["xnnpack"]],
            f"{row['rss_mib']:.0f} / {row['x86_rss_mib']:.0f} MiB",
        ))
    widths = [max(len(line[column]) for line in table) for column in range(len(header))]
    print()
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
    print(f"(x86 twin: same command, same interpreter version; int8 outputs may differ by {max_steps:g} step "
          "where XNNPACK's arm64 and x86 kernels round differently; RSS: VmHWM of the eval process, "
          "under emulation including qemu)")
    for note in notes:
        print(note)
    for name, install in installs.items():
        pins = ", ".join(f"{package}=={version}" for package, version in sorted(install["packages"].items())
                         if package not in ("pip", "setuptools"))
        print(f"venv-{name}: numpy {install['numpy']} from {install['numpy_from']}; {pins} ({install['seconds']:.0f} s)")
    print("time: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items()))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="pi/check.py", description=__doc__.splitlines()[0])
    parser.add_argument("--rootfs", type=pathlib.Path, required=True, help="the mounted arm64 rootfs (pi/check.sh)")
    parser.add_argument("--bundle", type=pathlib.Path, default=REPO_ROOT / "artifacts" / f"{BUNDLE}.tar.gz")
    parser.add_argument("--x86-python", default=sys.executable, help="python of the workstation venv")
    parser.add_argument("--cpus", default="cortex-a72,cortex-a76", help="QEMU_CPU models, comma-separated")
    parser.add_argument("--full-readme-eval", action="store_true",
                        help="the README's eval of the whole bundle on all 10,000 images on the first CPU (+5 min)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="device commands run at once")
    parser.add_argument("--max-steps", type=float, default=1.0,
                        help="largest accepted difference of an int8 output from x86, in quantization steps")
    parser.add_argument("--no-bench", action="store_true", help="skip `bench` on the device")
    parser.add_argument("--summary-json", type=pathlib.Path, default=None, help="also write the results here")
    arguments = parser.parse_args(argv)
    cpus = [cpu.strip() for cpu in arguments.cpus.split(",") if cpu.strip()]
    if not cpus or set(cpus) - set(CPU_PART):
        parser.error(f"--cpus: choose from {sorted(CPU_PART)}")
    started, timings = time.monotonic(), {}
    device = Device(arguments.rootfs)
    try:
        if not arguments.bundle.is_file():
            raise CheckFailed(f"{arguments.bundle}: no such bundle; run 'make bundle' first")
        with tempfile.TemporaryDirectory(prefix="pi-check-") as scratch:
            scratch = pathlib.Path(scratch)
            with tarfile.open(arguments.bundle) as archive:
                archive.extractall(scratch, filter="data")
            bundle_dir = scratch / BUNDLE
            wheels = sorted(bundle_dir.glob("mnist_edge-*.whl"))
            if len(wheels) != 1:
                raise CheckFailed(f"{arguments.bundle}: expected one mnist_edge wheel, found {[w.name for w in wheels]}")
            with zipfile.ZipFile(wheels[0]) as wheel:
                with_predict = "edge_runtime/images.py" in wheel.namelist()
            if not with_predict:
                log("the bundle's wheel has no edge_runtime/images.py: predict is not checked (rebuild the bundle)")
            truth = write_digit_images(bundle_dir / "test_set.npz", scratch / "digits")
            make_layout(scratch, bundle_dir)
            tasks = plan(cpus, "outputs", with_predict, not arguments.no_bench, arguments.full_readme_eval)

            step = time.monotonic()
            log(f"x86 twins with {arguments.x86_python} and tflite-runtime 2.14")
            x86_python = {"litert": arguments.x86_python, "tflite-runtime": install_x86_tflite_runtime(scratch, wheels[0])}
            x86_environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0", "MNIST_EDGE_NATIVE_LOG": "1"}

            def on_x86(script, cpu):
                return timed_run(["/bin/bash", "-c", script], x86_environment, 900, f"[x86] {script[:150]}", cwd=scratch)

            x86_results = {task[0]: run_task(task, on_x86, x86_python, scratch) for task in tasks}
            timings["x86 twins"] = time.monotonic() - step

            step = time.monotonic()
            prepare_home(device.home, arguments.bundle, scratch)
            installs = install_on_device(device, wheels[0].name)
            timings["device install"] = time.monotonic() - step

            step = time.monotonic()
            device_python = {name: f"~/venv-{name}/bin/python" for name, *_ in VENVS}
            # Longest first, so that two cores finish together.
            order = sorted(tasks, key=estimated_cost, reverse=True)
            with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, arguments.jobs)) as pool:
                futures = {task[0]: pool.submit(run_task, task, device.run, device_python, device.home) for task in order}
                device_results = {}
                try:
                    for key, future in futures.items():
                        device_results[key] = future.result()
                        log(f"{key}: done in {device_results[key]['seconds']:.0f} s")
                except BaseException:
                    for future in futures.values():
                        future.cancel()
                    raise
            timings["device runs"] = time.monotonic() - step

            rows, notes, failures = compare(tasks, device_results, x86_results, device.home / "outputs",
                                            scratch / "outputs", arguments.max_steps, truth)
            timings["total"] = time.monotonic() - started
            print_summary(rows, notes, installs, timings, arguments.max_steps)
            if arguments.summary_json:
                arguments.summary_json.write_text(json.dumps({
                    "rows": rows, "notes": notes, "failures": failures, "installs": installs, "timings_s": timings,
                    "device": device_results, "x86": x86_results, "truth": truth,
                }, indent=2, default=str) + "\n")
    except CheckFailed as error:
        print(f"pi-check FAILED: {error}", file=sys.stderr)
        return 1
    for failure in failures:
        print(f"pi-check FAILED: {failure}", file=sys.stderr)
    if failures:
        return 1
    print(f"pi-check passed: the bundle installs and runs on emulated {', '.join(cpus)} with x86's results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
