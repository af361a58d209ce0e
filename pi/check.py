"""The emulated Raspberry Pi check: install the deploy bundle on every emulated Pi OS, run it, compare with x86.

Run by pi/check.sh (`python -m pi.check`), which builds (or reuses) each row's rootfs and mounts
/proc, /sys and /dev in it; this only runs commands there with `chroot` (qemu-user through
binfmt_misc does the rest). The rows, their installs and runs are in pi/platforms.py, the command
lines in pi/tasks.py, chroot and x86 running in pi/device.py, the rules in pi/verdicts.py.

On each "device" it does what docs/device.md tells that platform's users: unpack the bundle, create a
venv, `pip install` the bundle's wheel (with an extra, or none over Debian's numpy), run `python -m
edge_runtime eval|predict|bench|serve`. Every device command has an x86 twin run here with the same
arguments and the same interpreter version, except `mnist-edge install` (the "install" runs: three
signed bundles made by pi/install_bundles.py from --artifacts, installed with a real serve on the
device; their x86 side is tests/test_install_proof.py). Exit 1 with one line per broken rule, else 0.
"""

import argparse
import concurrent.futures
import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import tarfile
import tempfile
import time

from pi import device as device_module, platforms, tasks, verdicts
from pi.device import CheckFailed, log

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def run_in_pool(jobs, work, describe):
    """Run callables `work` ({key: callable}) on `jobs` threads in the given order; return {key: result}.

    The first exception cancels what has not started and is raised.
    """
    results = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {key: pool.submit(function) for key, function in work.items()}
        try:
            for key, future in futures.items():
                results[key] = future.result()
                log(describe(key, results[key]))
        except BaseException:
            for future in futures.values():
                future.cancel()
            raise
    return results


def prepare_scratch(bundle, scratch, rows):
    """Unpack the bundle on x86 and write the files every run reads. Returns (wheel path, PNG truth)."""
    if not bundle.is_file():
        raise CheckFailed(f"{bundle}: no such bundle; run 'make bundle' first")
    with tarfile.open(bundle) as archive:
        archive.extractall(scratch, filter="data")
    bundle_dir = scratch / device_module.BUNDLE
    wheels = sorted(bundle_dir.glob("mnist_edge-*.whl"))
    if len(wheels) != 1:
        raise CheckFailed(f"{bundle}: expected one mnist_edge wheel, found {[wheel.name for wheel in wheels]}")
    counts = {run.images for row in rows for run in row.runs} | {platforms.REFERENCE_IMAGES}
    truth = tasks.make_layout(scratch, bundle_dir, counts)
    return wheels[0], truth


def run_x86_twins(x86, rows, wheel):
    """Every distinct x86 twin once, plus x86 LiteRT's reference kernels on the whole test set.

    Returns ({twin key: record}, the reference record).
    """
    x86.install_twins(wheel)
    records = {}
    for row in rows:
        for run in row.runs:
            if run.kind == "install":
                continue
            python = x86.python(row.venv(run.venv))
            key = tasks.twin_key(run, python)
            if key not in records:
                records[key] = tasks.execute(run, x86, python, f"outputs/x86-{key}")
    reference = tasks.execute(tasks.X86_REFERENCE, x86, x86.python(platforms.LITERT), "outputs/x86-reference")
    if reference["status"] != 0:
        raise CheckFailed(f"x86 LiteRT with reference kernels failed: {reference.get('error')}")
    return records, reference


def make_install_bundles(x86_python, bundle, artifacts, output):
    """pi/install_bundles.py with the workstation's Python (TensorFlow, for the outlier export); its seconds."""
    started = time.monotonic()
    result = subprocess.run([x86_python, "-m", "pi.install_bundles", "--bundle", str(bundle), "--artifacts",
                             str(artifacts), "--output", str(output)], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=1800)
    if result.returncode != 0:
        raise CheckFailed(f"making the install runs' bundles failed: {device_module.last_line(result)}")
    for line in result.stdout.splitlines():
        log(f"install bundle {line}")
    return time.monotonic() - started


def install_row(device, row, bundle, scratch, wheel):
    """Lay out the device user's home, make the row's venvs, read /proc/cpuinfo for each CPU."""
    started = time.monotonic()
    tasks.copy_layout(device.home, bundle, scratch, [venv.lock for venv in row.venvs])
    installs = device_module.install(device, row, wheel.name)
    parts = {cpu: device_module.cpu_identity(device, cpu) for cpu in row.cpus}
    return {"installs": installs, "cpuinfo": parts, "seconds": round(time.monotonic() - started, 1)}


def parse_rootfs(items):
    """--rootfs NAME=PATH items -> {row name: path}."""
    mapping = {}
    for item in items:
        name, separator, path = item.partition("=")
        if not separator or not path:
            raise ValueError(f"--rootfs {item!r}: expected NAME=PATH")
        mapping[name] = pathlib.Path(path)
    return mapping


def main(argv=None):
    parser = argparse.ArgumentParser(prog="pi/check.py", description=__doc__.splitlines()[0])
    parser.add_argument("--rootfs", action="append", default=[], metavar="ROW=PATH",
                        help="a row's mounted rootfs (pi/check.sh gives one per row)")
    parser.add_argument("--rows", default=None, help=f"rows to check, comma-separated (default: every --rootfs): "
                                                     f"{', '.join(platforms.ROW_NAMES)}")
    parser.add_argument("--list-rows", action="store_true", help="print the row names, one a line, and exit")
    parser.add_argument("--kinds", default=None,
                        help="only these run kinds, comma-separated (eval, reference, predict, bench, serve, install): "
                             "for working on one of them; the default, every run, is the check")
    parser.add_argument("--bundle", type=pathlib.Path, default=REPO_ROOT / "artifacts" / f"{device_module.BUNDLE}.tar.gz")
    parser.add_argument("--artifacts", type=pathlib.Path, default=None,
                        help="the export the bundle came from (its model.keras), for the install runs' bundles "
                             "(default: the bundle's directory, where 'make bundle' writes it)")
    parser.add_argument("--x86-python", default=sys.executable, help="python of the workstation venv")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="device commands run at once")
    parser.add_argument("--max-steps", type=float, default=1.0,
                        help="largest accepted difference of an int8 output from x86 through XNNPACK, in steps")
    parser.add_argument("--summary-json", type=pathlib.Path, default=None, help="also write the results here")
    arguments = parser.parse_args(argv)
    if arguments.list_rows:
        print("\n".join(platforms.ROW_NAMES))
        return 0
    try:
        rootfs = parse_rootfs(arguments.rootfs)
        names = arguments.rows.split(",") if arguments.rows else list(rootfs)
        rows = platforms.rows_named([name.strip() for name in names if name.strip()])
        if arguments.kinds:
            kinds = {kind.strip() for kind in arguments.kinds.split(",") if kind.strip()}
            rows = tuple(dataclasses.replace(row, runs=tuple(run for run in row.runs if run.kind in kinds)) for row in rows)
    except ValueError as error:
        parser.error(str(error))
    missing = [row.name for row in rows if row.name not in rootfs]
    if not rows or missing:
        parser.error(f"no --rootfs for row(s) {', '.join(missing) or '(none given)'}")
    started, timings = time.monotonic(), {}
    devices = {row.name: device_module.Device(row.name, rootfs[row.name]) for row in rows}
    try:
        with tempfile.TemporaryDirectory(prefix="pi-check-") as scratch:
            scratch = pathlib.Path(scratch)
            wheel, truth = prepare_scratch(arguments.bundle, scratch, rows)
            x86 = device_module.X86(scratch, arguments.x86_python)
            install_bundles = scratch / "install-bundles"
            artifacts = arguments.artifacts or arguments.bundle.resolve().parent

            def x86_work():
                twins = run_x86_twins(x86, rows, wheel)
                if any(run.kind == "install" for row in rows for run in row.runs):
                    timings["install runs' bundles (x86)"] = make_install_bundles(
                        arguments.x86_python, arguments.bundle, artifacts, install_bundles)
                return twins

            # x86 twins (light) beside the device installs (network, then pip under emulation).
            step = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(max_workers=1) as x86_pool:
                x86_future = x86_pool.submit(x86_work)
                setups = run_in_pool(arguments.jobs, {
                    row.name: (lambda row=row: install_row(devices[row.name], row, arguments.bundle, scratch, wheel))
                    for row in rows}, lambda name, setup: f"{name}: installed in {setup['seconds']:.0f} s")
                x86_records, x86_reference = x86_future.result()
            timings["installs and x86 twins"] = time.monotonic() - step

            # Every device run of every row on `jobs` threads, longest first, so that the cores finish together.
            step = time.monotonic()
            work = {}
            for row in rows:
                for run in row.runs:
                    work[(row.name, run.cpu, run.key)] = (
                        lambda row=row, run=run: tasks.execute(run, devices[row.name], devices[row.name].python(run.venv),
                                                               f"outputs/{run.cpu}/{run.key}", install_bundles))
            order = sorted(work, key=lambda key: -next(run.seconds for row in rows for run in row.runs
                                                       if (row.name, run.cpu, run.key) == key))
            device_records = run_in_pool(arguments.jobs, {key: work[key] for key in order},
                                         lambda key, record: f"{' '.join(key)}: exit {record['status']} in {record['seconds']:.0f} s")
            timings["device runs"] = time.monotonic() - step

            verdict = verdicts.Verdict(arguments.max_steps, truth)
            row_seconds = {}
            for row in rows:
                runs = []
                for run in row.runs:
                    twin = (None if run.kind == "install"  # no x86 twin: tests/test_install_proof.py is that side
                            else x86_records[tasks.twin_key(run, x86.python(row.venv(run.venv)))])
                    runs.append((run, device_records[(row.name, run.cpu, run.key)], twin))
                before = len(verdict.failures)
                verdict.judge_row(row, devices[row.name].home, scratch, runs, x86_reference, setups[row.name]["cpuinfo"])
                row_seconds[row.name] = {"install": setups[row.name]["seconds"],
                                         "runs": round(sum(record["seconds"] for _, record, _ in runs), 1),
                                         "passed": len(verdict.failures) == before}
            timings["total"] = time.monotonic() - started
            verdicts.print_table(verdict.lines, arguments.max_steps)
            for note in verdict.notes:
                print(note)
            for row in rows:
                for name, install in setups[row.name]["installs"].items():
                    pins = ", ".join(f"{package}=={version}" for package, version in sorted(install["packages"].items())
                                     if package not in ("pip", "setuptools"))
                    print(f"{row.name} venv-{name}: Python {install['python']}, numpy {install['numpy']} from "
                          f"{install['numpy_from']}, numpy engine arithmetic {install['numpy_engine_arithmetic']}; "
                          f"{pins} ({install['seconds']:.0f} s)")
                cost = row_seconds[row.name]
                print(f"{row.name}: {'passed' if cost['passed'] else 'FAILED'}; install {cost['install']:.0f} s, "
                      f"runs {cost['runs']:.0f} s of emulated CPU time")
            print("time: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items()))
            if arguments.summary_json:
                arguments.summary_json.write_text(json.dumps({
                    "lines": verdict.lines, "notes": verdict.notes, "failures": verdict.failures,
                    "rows": {row.name: {**row_seconds[row.name], **setups[row.name]} for row in rows},
                    "rss_limits_mib": {row.name: row.rss_limit_mib for row in rows},
                    "timings_s": timings, "truth": truth,
                    "device": {" ".join(key): record for key, record in device_records.items()},
                }, indent=2, default=str) + "\n")
    except CheckFailed as error:
        print(f"pi-check FAILED: {error}", file=sys.stderr)
        return 1
    for failure in verdict.failures:
        print(f"pi-check FAILED: {failure}", file=sys.stderr)
    if verdict.failures:
        return 1
    print(f"pi-check passed: {', '.join(row.name for row in rows)} install and run the bundle with x86's results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
