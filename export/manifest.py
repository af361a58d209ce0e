"""Build manifest.json, in the schema edge_runtime.manifest defines and reads back."""

import datetime
import importlib.metadata
import platform

from edge_runtime import drift, manifest as runtime_manifest
from edge_runtime import preprocessing

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


def file_entry(path, role, **details):
    """Return the manifest entry of one exported file: role, hash, size, then `details`."""
    return {
        "role": role,
        "sha256": runtime_manifest.sha256_of(path),
        "bytes": path.stat().st_size,
        **details,
    }


def build_manifest(source_model, files, input_shape, classes, class_names_source, preparation, polarity,
                   calibration, tolerances, data_source, top1_edges=drift.DEFAULT_EDGES, recovery=None):
    """Return the manifest as a JSON-ready dict, checked against the runtime's schema.

    Takes: `source_model` (dict: file, sha256, parameters, test_accuracy), `files` (name ->
    file_entry), the model's `input_shape` (H, W, C), the class names and where they came from,
    the image `preparation` and training-data `polarity`, the `calibration` settings, the
    validation `tolerances` (dict), a description of the data (`data_source`), the bin edges of
    the top-1 probability histograms the file entries hold (label-free drift, edge_runtime.drift)
    and, when the recovery ladder chose the quantized models, its record (`recovery`).
    Raises: ManifestFormatError if the result breaks the schema (a bug, caught before writing).
    """
    document = {
        "format_version": runtime_manifest.FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source_model": source_model,
        "input": {
            "shape": [int(size) for size in input_shape],
            "layout": preprocessing.LAYOUT,
            "scaling": preprocessing.SCALING,
            "dtype_before_quantization": "float32",
        },
        "classes": list(classes),
        "class_names_source": class_names_source,
        "preparation": {"name": preparation, "polarity": polarity},
        "data": {"source": data_source},
        "calibration": calibration,
        "tolerances": tolerances,
        "top1_histogram": {"edges": list(drift.check_edges(top1_edges)), "statistic": drift.STATISTIC},
        "tools": tool_versions(),
        "files": files,
    }
    if recovery is not None:
        document["recovery"] = recovery
    runtime_manifest.Manifest.parse(document, source="the manifest being written")
    return document
