"""Build manifest.json: what each exported file is, how to feed it, how accurate it is, who made it."""

import datetime
import importlib.metadata
import platform

from edge_runtime import manifest as runtime_manifest
from edge_runtime import preprocessing

FORMAT_VERSION = 1
TOOLS = ("tensorflow-cpu", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert", "numpy")


def tool_versions():
    """Return the installed versions of the tools that make the exports (None when absent)."""
    versions = {"python": platform.python_version()}
    for distribution in TOOLS:
        try:
            versions[distribution] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            versions[distribution] = None
    return versions


def file_entry(path, precision, metrics):
    """Return the manifest entry of one exported file: hash, size, tensors, accuracy."""
    return {
        "sha256": runtime_manifest.sha256_of(path),
        "bytes": path.stat().st_size,
        "format": path.suffix.lstrip("."),
        "precision": precision,
        **metrics,
    }


def build_manifest(source_model, files, calibration, tolerances, test_set):
    """Return the manifest as a JSON-ready dict.

    Takes: `source_model` (dict: file, sha256, test_accuracy), `files` (name -> file_entry),
    `calibration` and `test_set` descriptions (dicts), and the validation `tolerances` (dict).
    """
    return {
        "format_version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source_model": source_model,
        "preprocessing": preprocessing.CONTRACT,
        "labels": list(preprocessing.LABELS),
        "test_set": test_set,
        "calibration": calibration,
        "tolerances": tolerances,
        "tools": tool_versions(),
        "files": files,
    }
