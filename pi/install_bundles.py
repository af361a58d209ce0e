"""The three signed bundles pi-check's `install` runs put on each emulated Pi, and the key they are signed with.

    python -m pi.install_bundles --bundle artifacts/mnist-edge-bundle.tar.gz --artifacts artifacts --output DIR

Written to DIR (a scratch directory: the key is thrown away with it):
- good/: the trained bundle (--bundle) as it is, signed;
- falls-live/: the trained model (--artifacts/model.keras) with an outlier channel: conv1's output
  channel 0 times OUTLIER_SCALE, and conv2's weights that read it divided by as much. ReLU and max
  pooling commute with a positive scale, so the float model computes the same function, but its
  int8 model collapses (one activation range 1000 times wider shares one int8 scale). Exported with
  `--max-int8-drop 95`, so the exporter's own gate lets it through, and its manifest's tolerance
  says 95 points: a bundle whose gate passes and which must be caught after the switch;
- gate-fails/: that export with its manifest's tolerance put back to the trained export's, and
  another `created` (another version): eval refuses it on any images, with or without a float
  reference on the device;
- trusted-keys: the public line of a key made here for this run, which signed all three;
- bundles.json: {name: {"path", "identity", "int8_sha256", "tolerance_points"}}.
Needs TensorFlow for the export: run it with the workstation's Python (pi-check's --x86-python).
"""

import argparse
import json
import pathlib
import shutil
import subprocess
import sys
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
OUTLIER_SCALE = 1000.0
OPENED_GATE_POINTS = 95.0  # export --max-int8-drop for the outlier export
NAMES = ("good", "gate-fails", "falls-live")


def save_outlier_model(model_path, output_path, scale):
    """Save the Keras model at `model_path` with the outlier channel described above."""
    import keras

    model = keras.models.load_model(model_path)
    first, second = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)][:2]
    kernel, bias = first.get_weights()
    kernel[..., 0] *= scale
    bias[0] *= scale
    first.set_weights([kernel, bias])
    next_kernel, next_bias = second.get_weights()
    next_kernel[:, :, 0, :] /= scale
    second.set_weights([next_kernel, next_bias])
    model.save(output_path)


def export_outlier(artifacts, directory):
    """Export the outlier model into `directory` with the exporter's gate opened; return the directory."""
    directory.mkdir(parents=True)
    save_outlier_model(artifacts / "model.keras", directory / "model.keras", OUTLIER_SCALE)
    result = subprocess.run([sys.executable, "-m", "export", "--model", str(directory / "model.keras"),
                             "--output-dir", str(directory), "--max-int8-drop", f"{OPENED_GATE_POINTS:g}"],
                            cwd=REPO_ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"exporting the outlier model failed: {last}")
    return directory


def describe(path):
    from edge_runtime import manifest
    from edge_runtime.install import store

    archive = store.BundleArchive(path)
    document = archive.manifest.document
    (int8,) = [name for name in archive.manifest.files_with_role(manifest.ROLE_INT8_MODEL) if name.endswith(".tflite")]
    return {"path": str(path), "identity": archive.identity, "int8_sha256": document["files"][int8]["sha256"],
            "tolerance_points": document["tolerances"]["int8_max_accuracy_drop_points"]}


def make_bundles(bundle, artifacts, output):
    """Write the three signed bundles, the trusted key and bundles.json into `output`; return bundles.json's dict."""
    from edge_runtime.install import signing
    from export import bundle as bundle_module

    output = pathlib.Path(output)
    output.mkdir(parents=True, exist_ok=True)
    key = output / "signing-key" / "pi-check"
    key.parent.mkdir()
    _, public, _ = signing.generate_key_pair(key, comment="pi-check install runs (thrown away)")
    shutil.copy(public, output / "trusted-keys")

    paths = {name: output / name / bundle_module.BUNDLE_FILE_NAME for name in NAMES}
    paths["good"].parent.mkdir()
    shutil.copy(bundle, paths["good"])

    exported = export_outlier(pathlib.Path(artifacts), output / "outlier-export")
    bundle_module.build_bundle(exported, paths["falls-live"])

    trained_tolerance = json.loads((pathlib.Path(artifacts) / "manifest.json").read_text())["tolerances"]
    document = json.loads((exported / "manifest.json").read_text())
    document["tolerances"]["int8_max_accuracy_drop_points"] = trained_tolerance["int8_max_accuracy_drop_points"]
    document["created"] = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 1))
    (exported / "manifest.json").write_text(json.dumps(document, indent=2) + "\n")
    bundle_module.build_bundle(exported, paths["gate-fails"])

    for path in paths.values():
        signing.sign_file(path, key)
    described = {name: describe(path) for name, path in paths.items()}
    (output / "bundles.json").write_text(json.dumps(described, indent=2) + "\n")
    return described


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pi.install_bundles", description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=pathlib.Path, required=True, help="the trained deploy bundle (make bundle)")
    parser.add_argument("--artifacts", type=pathlib.Path, required=True, help="the export it came from (model.keras)")
    parser.add_argument("--output", type=pathlib.Path, required=True, help="an empty or missing directory")
    arguments = parser.parse_args(argv)
    try:
        described = make_bundles(arguments.bundle, arguments.artifacts, arguments.output)
    except (OSError, RuntimeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for name, entry in described.items():
        print(f"{name}: {entry['identity']} (int8 tolerance {entry['tolerance_points']:g} pt)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
