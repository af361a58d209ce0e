"""The rows of `make pi-check`: which Raspberry Pi OS each emulates, how its users install, what runs.

A row is one emulated OS (a rootfs that pi/rootfs.sh builds under the same name), the CPUs it is run
as (QEMU_CPU), the venvs made there the way docs/device.md tells that platform's users, and the runs:
each a `python -m edge_runtime` command whose results are compared with the same command on x86.
What each rootfs is built from (suite, architecture, Debian packages) lives in pi/rootfs.sh.

Image counts: all 10,000 test images where emulation is fast enough, the first 2,000 on slow paths
(the float reference beside the int8 model, the numpy engine over trixie's reference BLAS, hard-float
emulation on armhf), chosen so that `make pi-check` from scratch fits CI's budget. `seconds` is what
the run took under emulation on the shared 2-core test machine with another run beside it; it only
orders the work (longest first), it checks nothing.
"""

import dataclasses
import typing

FULL = 10000  # the whole test set
SUBSET = 2000  # the first images, where a whole pass costs too much under emulation
REFERENCE_IMAGES = 1000  # for the interpreters' reference kernels against x86

# "CPU part" in the emulated /proc/cpuinfo, and the boards each CPU stands for.
CPUS = {
    "cortex-a72": ("0xd08", "Pi 4"),
    "cortex-a76": ("0xd0b", "Pi 5"),
    "cortex-a7": ("0xc07", "Pi 2, 3, Zero 2 W on a 32-bit OS"),
    "arm1176": ("0xb76", "Pi 1, Zero, Zero W"),
}


@dataclasses.dataclass(frozen=True)
class Venv:
    """One install as docs/device.md tells it: `python3 -m venv [FLAGS] ~/venv-NAME; pip install -c LOCK WHEEL[EXTRAS]`."""

    name: str
    extras: str  # "" installs the wheel with no extra: the numpy engine, numpy and Pillow from Debian
    system_site_packages: bool  # True where numpy (and Pillow) come from apt, as on 32-bit Pi OS
    lock: str  # constraints file in pi/: the versions checked


@dataclasses.dataclass(frozen=True)
class Run:
    """One device command with an x86 twin.

    kind: "eval" (accuracy and raw outputs), "reference" (eval with the interpreter's reference
    kernels, MNIST_EDGE_TFLITE_KERNELS=reference), "predict" (PNG photos), "bench", "serve" (the
    HTTP service started on the device, its self-check on `images` test images, then the PNG photos
    posted to /api/predict from this machine over loopback), or "install" (`mnist-edge install` of
    three signed bundles as `plan` says, its gate on `images` test images: see InstallPlan).
    Every kind but "install" has an x86 twin; install's x86 side is tests/test_install_proof.py.
    target: "int8" (the int8 .tflite alone: no float reference beside it, which would cost several
    times the int8 model under emulation) or "bundle" (docs/device.md's `eval mnist-edge-bundle/`).
    backend: forced with --backend, or None for the automatic choice.
    """

    kind: str
    venv: str
    cpu: str
    backend: typing.Optional[str] = None
    images: int = FULL
    target: str = "int8"
    seconds: float = 60.0
    plan: typing.Optional["InstallPlan"] = None  # kind "install" only

    @property
    def key(self):
        parts = [self.kind, self.target if self.kind == "eval" else None, self.backend or "auto", self.venv]
        return "-".join(part for part in parts if part) + (f"-{self.images}" if self.kind in ("eval", "reference", "serve", "install") else "")


@dataclasses.dataclass(frozen=True)
class InstallPlan:
    """How a row's `install` run installs: the device's service and each version's venv recipe.

    The run installs three signed bundles (pi/install_bundles.py) with the real `mnist-edge install`
    of the run's venv, into ~/mnist-edge-root, each version getting its own venv by install's recipe
    (`--extras`, `--system-site-packages`, pip constrained by `lock`), and a real `serve` restarted
    by pi/service.py (no systemd in a chroot). The host posts real test images to that serve during
    probation, to fill its agreement window. Expected: the trained bundle switched and through
    probation (exit 0); the outlier export with the trained tolerance refused at the gate (exit 3);
    the outlier export with its gate opened switched, then rolled back (exit 4): on live agreement
    where serve shadows, on its start-up self-check where it cannot.
    """

    extras: str  # install --extras for the versions' venvs
    system_site_packages: bool  # install --system-site-packages (Debian's numpy, Pillow)
    lock: str  # constraints for the versions' pip, a file in pi/
    shadowing: bool  # serve there runs the float reference beside the int8 model, so agreement is judged
    serve_flags: str = ""  # the device's own flags in its service's command line, beside the common ones
    self_check_images: int = 200  # serve --self-check-images
    window: int = 20  # serve --agreement-window; the host posts window + FEED_EXTRA images
    # Covers serve's start-up under emulation with room: ready 13 s after its restart on the Pi 4 row
    # (LiteRT's import, int8 and float models on 200 images) with another run beside it.
    probation_seconds: float = 75.0


@dataclasses.dataclass(frozen=True)
class Row:
    """One emulated OS; `name` is also its rootfs name in pi/rootfs.sh."""

    name: str
    boards: str
    system: str
    venvs: typing.Tuple[Venv, ...]
    runs: typing.Tuple[Run, ...]
    rss_limit_mib: typing.Optional[float] = None  # every eval's peak RSS, qemu included, must stay below
    xnnpack: bool = False  # LiteRT/tflite-runtime must run XNNPACK here (its arm64 kernels; /sys mounted)

    def venv(self, name):
        return next(venv for venv in self.venvs if venv.name == name)

    @property
    def cpus(self):
        return tuple(dict.fromkeys(run.cpu for run in self.runs))


# The serve extra (waitress, prometheus-client: pure Python) where a row runs `serve`, and the install
# extra (cryptography, for bundle signatures) where it runs `install`.
LITERT = Venv("litert", "edge,onnx,serve,install", False, "device-litert.lock")
GATE_IMAGES = 300  # install --gate-images: the whole bundle's eval (float reference too) costs minutes here
TFLITE_RUNTIME = Venv("tflite-runtime", "tflite-runtime", True, "device-tflite-runtime.lock")


def pi4_and_pi5_runs():
    """The 64-bit bookworm checks: the interpreters on both CPUs, the whole bundle on the Pi 4, the numpy engine."""
    runs = []
    for cpu in ("cortex-a72", "cortex-a76"):
        runs += [
            Run("eval", "litert", cpu, "litert", FULL, "int8", 85),
            Run("reference", "litert", cpu, "litert", REFERENCE_IMAGES, seconds=21),
            Run("reference", "tflite-runtime", cpu, "tflite-runtime", REFERENCE_IMAGES, seconds=26),
            Run("predict", "litert", cpu, seconds=6),
        ]
    runs += [
        # The whole bundle (onnxruntime and the float reference too) and tflite-runtime on the Pi 4:
        # on the Pi 5's CPU model they gave the very same results, at 280 s of emulation.
        Run("eval", "litert", "cortex-a72", None, SUBSET, "bundle", 193),
        Run("eval", "tflite-runtime", "cortex-a72", "tflite-runtime", SUBSET, "bundle", 87),
        # The numpy engine over pip's numpy 2 (Pi 4) and over Debian's numpy 1.24 (Pi 5).
        Run("eval", "litert", "cortex-a72", "numpy", FULL, "int8", 286),
        Run("eval", "tflite-runtime", "cortex-a76", "numpy", SUBSET, "int8", 94),
        Run("bench", "litert", "cortex-a72", seconds=23),
        Run("serve", "litert", "cortex-a72", None, REFERENCE_IMAGES, seconds=60),
        # Versions get pip's LiteRT as docs/device.md's 64-bit recipe; serve shadows with the float
        # TFLite model, so the outlier bundle is caught by its live int8-float agreement.
        Run("install", "litert", "cortex-a72", None, GATE_IMAGES, seconds=520,
            plan=InstallPlan("edge,serve", False, "device-litert.lock", shadowing=True)),
    ]
    return tuple(runs)


ROWS = (
    Row("bookworm-arm64", "Pi 3, 4, 5, Zero 2 W (Pi 4 and 5 emulated)", "64-bit bookworm, Python 3.11",
        (LITERT, TFLITE_RUNTIME), pi4_and_pi5_runs(), xnnpack=True),
    Row("trixie-arm64", "Pi 3, 4, 5, Zero 2 W (Pi 4 and 5 emulated)",
        "64-bit trixie (Debian 13, the current Raspberry Pi OS), Python 3.13",
        (Venv("litert", "edge,onnx", False, "device-litert.lock"),
         Venv("debian", "", True, "device-trixie-debian.lock")),
        (Run("eval", "litert", "cortex-a76", "litert", FULL, "int8", 75),
         Run("eval", "litert", "cortex-a72", None, SUBSET, "bundle", 160),
         Run("reference", "litert", "cortex-a76", "litert", REFERENCE_IMAGES, seconds=31),
         Run("eval", "debian", "cortex-a72", None, SUBSET, "bundle", 94),
         Run("predict", "litert", "cortex-a76", seconds=20),
         Run("predict", "debian", "cortex-a72", seconds=20)),
        xnnpack=True),
    Row("bookworm-armhf", "Pi 2, 3, Zero 2 W (32-bit OS)", "32-bit bookworm armhf (ARMv7), Python 3.11",
        (Venv("tflite-runtime", "tflite-runtime", True, "device-armhf.lock"),),
        (Run("eval", "tflite-runtime", "cortex-a7", "tflite-runtime", SUBSET, "bundle", 121),
         Run("reference", "tflite-runtime", "cortex-a7", "tflite-runtime", REFERENCE_IMAGES, seconds=25),
         Run("eval", "tflite-runtime", "cortex-a7", "numpy", SUBSET, "int8", 80),
         Run("predict", "tflite-runtime", "cortex-a7", seconds=20),
         Run("predict", "tflite-runtime", "cortex-a7", "numpy", seconds=20))),
    Row("trixie-armhf", "Pi 2, 3, 4, Zero 2 W (32-bit OS)", "32-bit trixie armhf (ARMv7), Python 3.13",
        (Venv("debian", "", True, "device-trixie-armhf.lock"),),
        (Run("eval", "debian", "cortex-a7", None, SUBSET, "bundle", 90),
         Run("predict", "debian", "cortex-a7", seconds=20))),
    Row("bookworm-armel", "Pi 1, Zero, Zero W (ARMv6)", "32-bit bookworm armel (soft-float), Python 3.11",
        (Venv("debian", "serve,install", True, "device-armel.lock"),),
        (Run("eval", "debian", "arm1176", None, FULL, "bundle", 204),
         Run("predict", "debian", "arm1176", seconds=30),
         Run("serve", "debian", "arm1176", "numpy", REFERENCE_IMAGES, seconds=90),
         # docs/device.md's armel recipe for each version (Debian's numpy, Pillow and cryptography).
         # No float model runs here, so serve cannot shadow: this device's own service holds the
         # int8 model to 1 point below the float accuracy the manifest records (--tolerance 1),
         # whatever tolerance a bundle carries, and keeps answering with the failed self-check's
         # reason on /readyz (503) instead of exiting, so probation fails at once with that reason.
         Run("install", "debian", "arm1176", None, GATE_IMAGES, seconds=190,
             plan=InstallPlan("serve", True, "device-armel.lock", shadowing=False,
                              serve_flags="--tolerance 1 --allow-failed-self-check"))),
        rss_limit_mib=128.0),
)
ROW_NAMES = tuple(row.name for row in ROWS)


def rows_named(names):
    """The rows with these names, in table order. Raises ValueError naming an unknown one."""
    unknown = sorted(set(names) - set(ROW_NAMES))
    if unknown:
        raise ValueError(f"unknown row(s) {', '.join(unknown)} (choose from {', '.join(ROW_NAMES)})")
    return tuple(row for row in ROWS if row.name in names)
