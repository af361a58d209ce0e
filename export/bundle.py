"""`python -m export.bundle`: pack what the device needs into one tarball.

The bundle holds a wheel of `edge_runtime` alone (no training or export code, no TensorFlow), the
files the manifest gives a device role (the int8 models, the float reference, the test set), the
manifest restricted to those files, DEPLOY.md (docs/device.md, the device page, as it is) and a
systemd unit for `serve`. Unpack, pip install, eval (or serve).
"""

import argparse
import gzip
import io
import json
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile


from edge_runtime import atomic_files, errors, manifest
from edge_runtime.install import signing

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
BUNDLE_DIR_NAME = "mnist-edge-bundle"
BUNDLE_FILE_NAME = f"{BUNDLE_DIR_NAME}.tar.gz"
BUNDLED_ROLES = (manifest.ROLE_INT8_MODEL, manifest.ROLE_FLOAT_REFERENCE, manifest.ROLE_TEST_SET)
# Entries get a fixed time and mode: what is in the bundle matters, not when it was packed.
ARCHIVE_MTIME = 1_700_000_000

# The device page is the bundle's DEPLOY.md: one guide, kept in docs/ and shipped as it is.
DEVICE_PAGE = REPO_ROOT / "docs" / "device.md"
SERVICE_UNIT = pathlib.Path(__file__).resolve().parent / "mnist-edge.service"


def build_wheel(destination):
    """Build the mnist-edge wheel (edge_runtime only) into `destination`; return its path.

    Raises: RuntimeError when pip fails, or the wheel holds anything but edge_runtime's files as they
    are in this checkout.
    """
    # setuptools builds in the checkout's build/ and packs whatever build/lib holds: a module since
    # deleted from edge_runtime would still ship. That folder is setuptools' scratch space (ignored by git).
    shutil.rmtree(REPO_ROOT / "build", ignore_errors=True)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(destination), str(REPO_ROOT)],
        capture_output=True, text=True,
    )
    wheels = sorted(pathlib.Path(destination).glob("mnist_edge-*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        last_line = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"building the mnist-edge wheel failed: {last_line}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        foreign = [name for name in wheel.namelist()
                   if not name.startswith(("edge_runtime/", "mnist_edge-"))]
        stale = [name for name in wheel.namelist()
                 if name.startswith("edge_runtime/") and not (REPO_ROOT / name).is_file()]
    if foreign:
        raise RuntimeError(f"{wheels[0].name}: holds files outside edge_runtime: {foreign[:5]}")
    if stale:
        raise RuntimeError(f"{wheels[0].name}: holds files this checkout does not have: {stale[:5]}")
    return wheels[0]


def read_device_page(wheel_name):
    """Return docs/device.md, which the bundle ships as DEPLOY.md, as bytes.

    Its install commands name the wheel file, so the page must name the wheel being bundled.
    Raises: RuntimeError when the page is missing or names another wheel.
    """
    try:
        text = DEVICE_PAGE.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RuntimeError(f"{DEVICE_PAGE}: missing; the bundle ships it as DEPLOY.md") from None
    if wheel_name not in text:
        raise RuntimeError(f"{DEVICE_PAGE}: its install commands do not name {wheel_name}, the wheel being bundled")
    return text.encode("utf-8")


def build_bundle(artifacts_dir, output=None):
    """Write the deploy tarball from an export in `artifacts_dir`; return its path.

    Raises: ModelFileError when the export is incomplete; IntegrityError when a file no longer
    matches its manifest (a bundle must never carry a file the manifest does not vouch for).
    """
    artifacts_dir = pathlib.Path(artifacts_dir)
    output = pathlib.Path(output or artifacts_dir / BUNDLE_FILE_NAME)
    document = manifest.read_manifest(artifacts_dir / manifest.MANIFEST_NAME)
    bundled = [name for role in BUNDLED_ROLES for name in document.files_with_role(role)]
    for name in bundled:
        if not (artifacts_dir / name).is_file():
            raise errors.ModelFileError(f"{artifacts_dir / name}: missing; run 'make export' first")
        manifest.verify_against_manifest(artifacts_dir / name, document)
    bundle_manifest = {**document.document, "files": {name: document.document["files"][name] for name in bundled}}

    with tempfile.TemporaryDirectory() as scratch:
        scratch = pathlib.Path(scratch)
        wheel = build_wheel(scratch)
        members = {
            wheel.name: wheel.read_bytes(),
            manifest.MANIFEST_NAME: (json.dumps(bundle_manifest, indent=2) + "\n").encode(),
            "DEPLOY.md": read_device_page(wheel.name),
            SERVICE_UNIT.name: SERVICE_UNIT.read_bytes(),
            **{name: (artifacts_dir / name).read_bytes() for name in bundled},
        }
        with atomic_files.atomic_output(output) as temporary:
            write_tarball(temporary, members)
    # A signature of the tarball this one replaces would only be refused on the device: remove it.
    signing.signature_path(output).unlink(missing_ok=True)
    return output


def write_tarball(path, members):
    """Write `members` (name -> bytes) under BUNDLE_DIR_NAME/ into a gzip'd tar at `path`."""
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as compressed, \
            tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name in sorted(members):
            info = tarfile.TarInfo(f"{BUNDLE_DIR_NAME}/{name}")
            info.size = len(members[name])
            info.mtime = ARCHIVE_MTIME
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(members[name]))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m export.bundle", description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=pathlib.Path, default=pathlib.Path("artifacts"))
    parser.add_argument("--output", type=pathlib.Path, default=None)
    arguments = parser.parse_args(argv)
    try:
        path = build_bundle(arguments.artifacts, arguments.output)
    except (RuntimeError, errors.EdgeRuntimeError) as error:
        print(f"error: {errors.one_line(error)}", file=sys.stderr)
        return 1
    with tarfile.open(path) as archive:
        for member in archive.getmembers():
            print(f"  {member.size:>10,}  {member.name}")
    print(f"Wrote {path} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
