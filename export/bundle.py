"""`python -m export.bundle`: pack what the device needs into one tarball.

The bundle holds a wheel of `edge_runtime` alone (no training or export code, no TensorFlow), the
files the manifest gives a device role (the int8 models, the float reference, the test set), the
manifest restricted to those files, DEPLOY.md and a systemd unit for `serve`. Unpack, pip
install, eval (or serve).
"""

import argparse
import gzip
import io
import json
import pathlib
import subprocess
import sys
import tarfile
import tempfile
import zipfile


from edge_runtime import atomic_files, errors, manifest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
BUNDLE_DIR_NAME = "mnist-edge-bundle"
BUNDLE_FILE_NAME = f"{BUNDLE_DIR_NAME}.tar.gz"
BUNDLED_ROLES = (manifest.ROLE_INT8_MODEL, manifest.ROLE_FLOAT_REFERENCE, manifest.ROLE_TEST_SET)
# Entries get a fixed time and mode: what is in the bundle matters, not when it was packed.
ARCHIVE_MTIME = 1_700_000_000

DEPLOY_TEXT = """# Deploying mnist-edge on a Raspberry Pi-class device

Tested on 64-bit Raspberry Pi OS (Debian bookworm, Python 3.11), Pi 4 and Pi 5 CPUs.

    tar xzf mnist-edge-bundle.tar.gz
    python3 -m venv ~/mnist-edge && . ~/mnist-edge/bin/activate
    pip install "mnist-edge-bundle/{wheel}[edge]"
    python -m edge_runtime eval mnist-edge-bundle/

`eval` runs the int8 models on the bundled test images, compares each with the float model's
accuracy recorded at export, and exits non-zero when one has lost more than the manifest's
tolerance. It checks the test set's sha256 and size against the manifest first.

Other interpreters:

- tflite-runtime 2.14 (needs numpy < 2; Debian's numpy 1.24 is fine):
  `python3 -m venv --system-site-packages ~/mnist-edge` then
  `pip install "mnist-edge-bundle/{wheel}[tflite-runtime]"`, and add `--backend tflite-runtime`.
- onnxruntime: `pip install "mnist-edge-bundle/{wheel}[onnx]"` (eval runs model_int8.onnx too).

Classify your own pictures (PNG, JPEG, PGM, .npy); it prints each class name and index:

    python -m edge_runtime predict mnist-edge-bundle/model_int8.tflite photo.jpg scans/

Speed and memory on this device:

    python -m edge_runtime bench mnist-edge-bundle/model_int8.tflite --threads 1
    python -m edge_runtime bench mnist-edge-bundle/model_int8.tflite --threads 4

Every model file is checked against the sha256 in manifest.json before it is loaded.

## Serving: an HTTP API, a page to draw or photograph a digit, Prometheus metrics

    pip install "mnist-edge-bundle/{wheel}[edge,serve]"
    mnist-edge serve mnist-edge-bundle/

Before it opens its port, `serve` runs the same check as `eval` on the bundled test images and
exits with status 3 if the int8 model lost too much (`--self-check-images N` checks fewer on a slow
board). It listens on 127.0.0.1:8080; open http://127.0.0.1:8080/ on the device. To reach it from
other machines, give it a token: `--host 0.0.0.0 --token-file FILE`, then every API call needs
`Authorization: Bearer <token>` (the page asks for it once).

## At boot, with systemd

`mnist-edge.service` runs `serve` as an unprivileged throw-away user (DynamicUser=yes), restarts
it if it fails (but not after a failed self-check), and reads the bundle from
/opt/mnist-edge/mnist-edge-bundle. As root:

    mkdir -p /opt/mnist-edge
    tar xzf mnist-edge-bundle.tar.gz -C /opt/mnist-edge
    python3 -m venv /opt/mnist-edge/venv
    /opt/mnist-edge/venv/bin/pip install "/opt/mnist-edge/mnist-edge-bundle/{wheel}[edge,serve]"
    cp /opt/mnist-edge/mnist-edge-bundle/mnist-edge.service /etc/systemd/system/
    systemctl daemon-reload
    systemctl enable --now mnist-edge
    journalctl -u mnist-edge          # the self-check line, then "ready on http://127.0.0.1:8080/"

Another bundle path, address or flag: `systemctl edit mnist-edge` and set, for instance,

    [Service]
    Environment=MNIST_EDGE_BUNDLE=/srv/mnist-edge-bundle

To serve the network with a token that only root can read (systemd hands it to the service):

    install -d -m 700 /etc/mnist-edge
    head -c 24 /dev/urandom | base64 > /etc/mnist-edge/token
    systemctl edit mnist-edge         # then add:

    [Service]
    LoadCredential=token:/etc/mnist-edge/token
    ExecStart=
    ExecStart=/opt/mnist-edge/venv/bin/mnist-edge serve ${{MNIST_EDGE_BUNDLE}} --host 0.0.0.0 --port 8080 --token-file ${{CREDENTIALS_DIRECTORY}}/token

    systemctl restart mnist-edge
"""
SERVICE_UNIT = pathlib.Path(__file__).resolve().parent / "mnist-edge.service"


def build_wheel(destination):
    """Build the mnist-edge wheel (edge_runtime only) into `destination`; return its path.

    Raises: RuntimeError when pip fails or the wheel holds anything but edge_runtime.
    """
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
    if foreign:
        raise RuntimeError(f"{wheels[0].name}: holds files outside edge_runtime: {foreign[:5]}")
    return wheels[0]


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
            "DEPLOY.md": DEPLOY_TEXT.format(wheel=wheel.name).encode(),
            SERVICE_UNIT.name: SERVICE_UNIT.read_bytes(),
            **{name: (artifacts_dir / name).read_bytes() for name in bundled},
        }
        with atomic_files.atomic_output(output) as temporary:
            write_tarball(temporary, members)
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
        print(f"error: {error}", file=sys.stderr)
        return 1
    with tarfile.open(path) as archive:
        for member in archive.getmembers():
            print(f"  {member.size:>10,}  {member.name}")
    print(f"Wrote {path} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
