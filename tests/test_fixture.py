"""The checked-in fixture (tests/fixtures/) is still what tests/fixtures/regenerate.py makes from its model.keras.

The script runs for real (TensorFlow, the full MNIST, a real export) into a scratch directory, and
what it writes is held against the checked-in files: the same files, a manifest of the same schema
with the same figures, the same test images, and models that answer the same.
"""

import json
import pathlib
import shutil

import numpy as np
import pytest

from tests.conftest import REPO_ROOT, require_tensorflow, run_cli

pytestmark = pytest.mark.slow
FIXTURES = REPO_ROOT / "tests" / "fixtures"
# tf2onnx names a few of the constants it adds in an order that changes from process to process
# (const_axes__28 in one run is const_starts__23 in another; Python's per-process string hashing is
# one cause), so the ONNX files are compared by what they hold and do, not byte for byte.
ONNX_FILES = ("model_f32.onnx", "model_int8.onnx")
# Different from run to run while what matters stays: when the manifest was written, the Python
# release that wrote it (the converters' versions are pinned by the lock and must match), and the
# ONNX files' hashes and sizes.
VOLATILE_FIELDS = {("created",), ("tools", "python"),
                   *((("files", name, field) for name in ONNX_FILES for field in ("sha256", "bytes")))}
# Figures that come out of a float computation: equal within this (they are bit-exact here so far).
FIGURE_TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    require_tensorflow("regenerating the fixture (a real export)")
    directory = tmp_path_factory.mktemp("fixture")
    shutil.copy(FIXTURES / "model.keras", directory / "model.keras")
    result = run_cli("-m", "tests.fixtures.regenerate", "--model", str(directory / "model.keras"),
                     "--output-dir", str(directory))
    assert result.returncode == 0, result.stderr[-3000:]
    return directory


def names(directory):
    return sorted(str(path.relative_to(directory)) for path in directory.rglob("*") if path.is_file())


def test_the_script_writes_the_same_files(regenerated):
    for part in ("bundle", "engine"):
        assert names(regenerated / part) == names(FIXTURES / part)
    assert (regenerated / "model.keras").read_bytes() == (FIXTURES / "model.keras").read_bytes()


def flatten(document, prefix=()):
    """{path tuple: leaf value} of a JSON document."""
    if isinstance(document, dict):
        return {key: value for name, item in document.items() for key, value in flatten(item, (*prefix, name)).items()}
    return {prefix: document}


def test_the_manifest_has_the_same_schema_and_figures(regenerated):
    new = flatten(json.loads((regenerated / "bundle" / "manifest.json").read_text()))
    old = flatten(json.loads((FIXTURES / "bundle" / "manifest.json").read_text()))
    assert sorted(new) == sorted(old)  # the same fields
    assert {key: type(value) for key, value in new.items()} == {key: type(value) for key, value in old.items()}
    for key in sorted(set(old) - VOLATILE_FIELDS):
        if isinstance(old[key], float):
            assert new[key] == pytest.approx(old[key], abs=FIGURE_TOLERANCE), key
        else:
            assert new[key] == old[key], key


def test_the_test_images_are_the_same(regenerated):
    with np.load(regenerated / "bundle" / "test_set.npz") as new, np.load(FIXTURES / "bundle" / "test_set.npz") as old:
        assert sorted(new.files) == sorted(old.files)
        for name in old.files:
            np.testing.assert_array_equal(new[name], old[name])


@pytest.mark.parametrize("path", [pathlib.Path(part) / name for part in ("bundle", "engine")
                                  for name in names(FIXTURES / part) if name.endswith(".tflite")], ids=str)
def test_every_tflite_model_is_the_same_file(regenerated, path):
    """The TFLite converter is deterministic given the same model and calibration images: byte for byte."""
    assert (regenerated / path).read_bytes() == (FIXTURES / path).read_bytes(), path


@pytest.mark.parametrize("name", ONNX_FILES)
def test_every_onnx_model_holds_the_same_weights_and_answers_the_same(regenerated, name):
    """The same operators, the same weights bit for bit, and the same outputs on the fixture's test
    images: bit for bit for int8, within 1e-6 for float32 (they are equal here so far)."""
    import onnx
    from onnx import numpy_helper

    from edge_runtime import classifier

    graphs = [onnx.load(directory / "bundle" / name).graph for directory in (regenerated, FIXTURES)]
    new, old = ([sorted(node.op_type for node in graph.node) for graph in graphs])
    assert new == old
    weights = [sorted((tuple(tensor.dims), tensor.data_type, numpy_helper.to_array(tensor).tobytes())
                      for tensor in graph.initializer) for graph in graphs]
    assert weights[0] == weights[1]
    with np.load(FIXTURES / "bundle" / "test_set.npz") as archive:
        images = archive["x_test"]
    new, old = (classifier.Classifier.load(directory / "bundle" / name).predict(images).raw
                for directory in (regenerated, FIXTURES))
    if name.endswith("int8.onnx"):
        np.testing.assert_array_equal(new, old)
    else:
        np.testing.assert_allclose(new, old, rtol=0, atol=1e-6)
