"""Running commands on the emulated device (a chroot into a mounted rootfs) and on x86, and installing there.

pi/check.sh mounts /proc, /sys, /dev and the wheel cache in each rootfs before this runs;
qemu-user, registered with binfmt_misc, runs the rootfs's binaries as the CPU in QEMU_CPU.
"""

import os
import pathlib
import shlex
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
HOME = "/home/pi"  # the device user's home inside each rootfs; wiped at the start of every run
PIP_CACHE = "/var/cache/mnist-edge-pip"  # bind-mounted by pi/rootfs.sh mount_rootfs
BUNDLE = "mnist-edge-bundle"
TENSORFLOW_PACKAGES = {"tensorflow", "tensorflow-cpu", "keras"}


class CheckFailed(Exception):
    """A check that cannot go on; its message is the one line pi-check prints."""


def log(message):
    print(f"pi-check: {message}", file=sys.stderr, flush=True)


def last_line(result):
    lines = result.stderr.strip().splitlines() or result.stdout.strip().splitlines()
    return (lines or ["no output"])[-1]


def timed_run(command, environment, timeout, what, cwd=None):
    """subprocess.run with its output captured and its wall time in `.seconds`; a timeout is a CheckFailed."""
    started = time.monotonic()
    try:
        result = subprocess.run(command, env=environment, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"{what}: timed out after {timeout} s") from None
    result.seconds = time.monotonic() - started
    return result


class Device:
    """Runs shell commands inside one mounted rootfs, as the device's user would, in ~ (HOME)."""

    def __init__(self, row_name, rootfs):
        self.name = row_name
        self.rootfs = pathlib.Path(rootfs)
        self.home = self.rootfs / HOME.lstrip("/")

    def run(self, command, cpu, environment=None, timeout=1800):
        argv, variables, _ = self.launch(command, cpu, environment)
        return timed_run(argv, variables, timeout, f"[{self.name} {cpu}] {command[:150]}")

    def launch(self, command, cpu, environment=None):
        """(argv, environment, cwd) that run `command` in ~ on the device, as the CPU `cpu`."""
        variables = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": HOME, "USER": "pi", "LANG": "C.UTF-8", "QEMU_CPU": cpu,
            "MNIST_EDGE_NATIVE_LOG": "1",  # XNNPACK's start-up line on stderr is the evidence that it runs
            # pip needs the host's CA bundle (it may hold a local proxy's certificate).
            "PIP_CERT": "/etc/ssl/host-ca-bundle.crt", "SSL_CERT_FILE": "/etc/ssl/host-ca-bundle.crt",
            "PIP_CACHE_DIR": PIP_CACHE, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1",
            "PIP_DEFAULT_TIMEOUT": "60", **(environment or {}),
        }
        return ["chroot", str(self.rootfs), "/bin/bash", "-c", f"set -e; cd ~; {command}"], variables, None

    def python(self, venv_name):
        return f"~/venv-{venv_name}/bin/python"


class X86:
    """The twin of every device command: the same arguments on this machine, in a scratch directory."""

    name = "x86"

    def __init__(self, scratch, workstation_python):
        self.home = pathlib.Path(scratch)
        # The interpreter family of a device venv (its extras) -> the x86 python with the same versions.
        self.pythons = {"edge,onnx": workstation_python}

    def run(self, command, cpu=None, environment=None, timeout=900):
        argv, variables, cwd = self.launch(command, cpu, environment)
        return timed_run(argv, variables, timeout, f"[x86] {command[:150]}", cwd=cwd)

    def launch(self, command, cpu=None, environment=None):
        """(argv, environment, cwd) that run `command` in the scratch directory."""
        variables = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0", "MNIST_EDGE_NATIVE_LOG": "1", **(environment or {})}
        return ["/bin/bash", "-c", f"set -e; {command}"], variables, self.home

    def python(self, venv):
        """The x86 python for a device venv: the workstation's for LiteRT, else a venv made by install_twins.

        The `serve` and `install` extras (waitress, prometheus-client; cryptography) do not change
        which: every twin has them.
        """
        return self.pythons[",".join(extra for extra in venv.extras.split(",") if extra and extra not in ("serve", "install"))]

    def install_twins(self, wheel):
        """The x86 twins of the other device installs, at the same versions as on the device.

        tflite-runtime 2.14 (numpy 1.x) for the tflite-runtime venvs, and numpy, Pillow and the wheel
        with no interpreter for the venvs over Debian's numpy (the numpy engine by automatic choice).
        """
        for extras, lock, requirements in (("tflite-runtime", "device-tflite-runtime.lock", [f"{wheel}[tflite-runtime,serve]"]),
                                           ("", "device-litert.lock", [f"{wheel}[serve]"])):
            venv = self.home / f"x86-venv-{extras or 'numpy-only'}"
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            result = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
                                     "-c", str(HERE / lock), *requirements],
                                    capture_output=True, text=True, timeout=600)
            if result.returncode != 0:
                raise CheckFailed(f"x86 twin venv {venv.name}: pip failed: {last_line(result)}")
            self.pythons[extras] = str(venv / "bin" / "python")


def install(device, row, wheel_name):
    """Unpack the bundle and make the row's venvs as docs/device.md says, pinned by each venv's lock file.

    Returns {venv name: {"seconds", "packages" (pip freeze), "numpy", "numpy_from", "python"}}.
    Raises CheckFailed when pip fails or pulls in TensorFlow.
    """
    cpu = row.cpus[0]
    result = device.run(f"tar xzf {BUNDLE}.tar.gz && mkdir -p int8-only && "
                        f"cp {BUNDLE}/model_int8.tflite {BUNDLE}/manifest.json {BUNDLE}/test_set.npz int8-only/",
                        cpu, timeout=300)
    if result.returncode != 0:
        raise CheckFailed(f"{row.name}: unpacking the bundle failed: {last_line(result)}")
    installs = {}
    for venv in row.venvs:
        where = f"~/venv-{venv.name}"
        flags = "--system-site-packages " if venv.system_site_packages else ""
        requirement = f"{BUNDLE}/{wheel_name}" + (f"[{venv.extras}]" if venv.extras else "")
        log(f"{row.name}: installing {requirement.split('/')[-1]} into {where}{' over Debian packages' if flags else ''}")
        result = device.run(f"python3 -m venv {flags}{where} && . {where}/bin/activate && "
                            f"pip install --quiet -c {venv.lock} {shlex.quote(requirement)} && "
                            f"pip list --format=freeze && python -m edge_runtime.cli.platform_report",
                            cpu, timeout=1200)
        if result.returncode != 0:
            raise CheckFailed(f"{row.name}: pip install of {requirement.split('/')[-1]} failed: {last_line(result)}")
        frozen = dict(line.split("==", 1) for line in result.stdout.splitlines() if "==" in line)
        report = dict(line.split(" ", 1) for line in result.stdout.splitlines() if line.startswith("platform-"))
        installs[venv.name] = {
            "seconds": round(result.seconds, 1), "packages": frozen,
            "numpy": report.get("platform-numpy"), "python": report.get("platform-python"),
            "numpy_from": "Debian" if report.get("platform-numpy-path", "").startswith("/usr/lib/python3/") else "pip",
            "pillow": report.get("platform-pillow"),
            "numpy_engine_arithmetic": report.get("platform-numpy-engine-arithmetic"),
            "machine": report.get("platform-machine"), "backends": report.get("platform-backends"),
        }
        if TENSORFLOW_PACKAGES & {key.lower() for key in frozen}:
            raise CheckFailed(f"{row.name}: the {venv.name} install pulled in TensorFlow or Keras: {sorted(frozen)}")
    return installs


def cpu_identity(device, cpu):
    """What the emulated /proc/cpuinfo says of QEMU_CPU=cpu: {"part": "CPU part" or None, "hardware": …, "model": …}.

    qemu names ARMv7 and ARMv8 CPUs by their part number; for ARMv6 it shows none, but its
    "Hardware" line names the CPU model (`QEMU v10.0.2 arm,arm1176`).
    """
    result = device.run("cat /proc/cpuinfo", cpu, timeout=120)
    fields = {}
    for line in result.stdout.splitlines():
        key, separator, value = line.partition(":")
        if separator:
            fields.setdefault(key.strip(), value.strip())
    return {"part": fields.get("CPU part"), "hardware": fields.get("Hardware"), "model": fields.get("model name")}
