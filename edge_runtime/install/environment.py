"""A version's own Python environment, and the gate it must pass there before it is switched to.

The environment is a venv inside the version's directory with the bundle's wheel installed the
way the platform's recipe says (see `Recipe`): on 64-bit Pi OS, pip brings LiteRT, numpy and
Pillow (`--extras edge,serve`); on 32-bit and ARMv6 Pi OS, the venv sees Debian's numpy and
Pillow (`--system-site-packages`) and the wheel comes with no extra. Each version keeps its own
venv, so rolling back brings back the runtime code as well as the models.

The gate is `eval` itself, run by the new environment's Python on the new bundle: the very check
and line a person gets from `mnist-edge eval`.
"""

import dataclasses
import pathlib
import subprocess
import sys

from edge_runtime import errors
from edge_runtime.install import store

# What a venv with the [edge,serve] extras takes on disk (LiteRT, numpy, Pillow, waitress, ...),
# measured on x86 and aarch64 with margin; the bundle's own size is added to it.
ENVIRONMENT_BYTES = 250_000_000


class InstallError(errors.EdgeRuntimeError):
    """Making a version's environment failed (venv or pip)."""


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a version's environment is made: `install`'s options map onto it one to one."""

    python: str = sys.executable  # the interpreter that creates the venv (its base Python is used)
    system_site_packages: bool = False  # see Debian's numpy and Pillow (32-bit and ARMv6 Pi OS)
    extras: str = "edge,serve"  # the wheel's extras pip installs ("" for none)
    no_deps: bool = False  # install the wheel alone: its dependencies are already visible
    pip_options: tuple = ()  # e.g. --index-url, --find-links, --no-index, -c device.lock


def python_of(version_dir):
    return pathlib.Path(version_dir) / store.VENV_DIR / "bin" / "python"


def run_quietly(command, what):
    """Run `command`; on failure raise InstallError (DiskFullError for ENOSPC) with its last stderr line."""
    result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()] or ["no output"]
        if any("No space left on device" in line for line in lines):
            raise store.DiskFullError(f"{what}: no space left on device; nothing was switched")
        raise InstallError(f"{what} failed (status {result.returncode}): {lines[-1].strip()}")
    return result


def outer_pip():
    """True when this interpreter's pip can install into another environment (`pip --python`, pip 22.3+).

    Then the version's venv is made without a pip of its own: ensurepip takes seconds to minutes
    on a Pi and 25 MB a version, for a pip the version never runs.
    """
    import importlib.metadata

    try:
        major, minor = (int(part) for part in importlib.metadata.version("pip").split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False
    return (major, minor) >= (22, 3)


def make_environment(version_dir, wheel_path, recipe):
    """Create VERSION/venv and install `wheel_path` into it as `recipe` says.

    Raises: InstallError or DiskFullError naming the step, with pip's or venv's last line.
    """
    venv = pathlib.Path(version_dir) / store.VENV_DIR
    borrow_pip = outer_pip()
    create = [recipe.python, "-m", "venv", *(["--system-site-packages"] if recipe.system_site_packages else []),
              *(["--without-pip"] if borrow_pip else []), str(venv)]
    run_quietly(create, f"creating {venv}")
    requirement = f"{wheel_path}[{recipe.extras}]" if recipe.extras else str(wheel_path)
    pip_program = ([sys.executable, "-m", "pip", "--python", str(python_of(version_dir))] if borrow_pip
                   else [str(python_of(version_dir)), "-m", "pip"])
    pip = [*pip_program, "install", "--quiet", "--disable-pip-version-check",
           *(["--no-deps"] if recipe.no_deps else []), *recipe.pip_options, requirement]
    run_quietly(pip, f"pip install {pathlib.Path(wheel_path).name} into {venv}")


@dataclasses.dataclass(frozen=True)
class GateResult:
    """eval's verdict on the new version: passed, its status, and its lines (stdout table, stderr)."""

    passed: bool
    status: int
    failure_lines: tuple
    table: str

    @property
    def reason(self):
        return "; ".join(self.failure_lines) or f"eval exited with status {self.status}"


def run_gate(version_dir, eval_options=()):
    """Run `python -m edge_runtime eval VERSION/bundle` with the version's own Python; return a GateResult.

    Its "FAILED: ..." and "error: ..." lines are the reasons a person running eval would see.
    """
    bundle = pathlib.Path(version_dir) / store.BUNDLE_DIR
    result = subprocess.run([str(python_of(version_dir)), "-m", "edge_runtime", "eval", str(bundle), *eval_options],
                            capture_output=True, text=True, stdin=subprocess.DEVNULL)
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    failures = tuple(line for line in lines if line.startswith(("FAILED:", "error:")))
    if result.returncode and not failures and lines:  # not eval's own words (a crash): its last line
        failures = (lines[-1],)
    return GateResult(passed=result.returncode == 0, status=result.returncode, failure_lines=failures,
                      table=result.stdout)
