"""manifest.json, the contract between the workstation and the device: its schema, reading and checking.

export writes it; everything else reads it. It records, once, what the export decided: the role of
each file (int8 model, float model, float reference, test set), the model's input (shape, layout,
scaling), the class names, which image preparation the model expects, the tolerances, the
calibration settings, the tool versions and, when the export's recovery ladder chose the quantized
model, how: its steps with their figures, the layers kept in float, the precision. What the model file itself knows (tensor shapes,
quantization) is read from the model, not from here.

A manifest whose `format_version` this runtime does not know, or with a missing or mistyped field,
is refused with one line naming the field.
"""

import json
import math
import os

from edge_runtime import errors

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 2

# What export names its outputs. Other modules find files through their roles in the manifest.
DEFAULT_FILE_NAMES = {
    "float_tflite": "model_f32.tflite",
    "int8_tflite": "model_int8.tflite",
    "float_onnx": "model_f32.onnx",
    "int8_onnx": "model_int8.onnx",
    "test_set": "test_set.npz",
}
ROLE_INT8_MODEL = "int8-model"  # what the device runs and eval checks
ROLE_FLOAT_MODEL = "float-model"  # a float export, for the workstation's comparisons
ROLE_FLOAT_REFERENCE = "float-reference"  # the float model the device runs to check the int8 ones
ROLE_TEST_SET = "test-set"  # .npz with x_test (N, H, W[, C]) uint8 and y_test (N,) class indices
ROLES = (ROLE_INT8_MODEL, ROLE_FLOAT_MODEL, ROLE_FLOAT_REFERENCE, ROLE_TEST_SET)
MODEL_ROLES = (ROLE_INT8_MODEL, ROLE_FLOAT_MODEL, ROLE_FLOAT_REFERENCE)

# What a model file computes in: float32; int8; int8 with some layers kept in float ("mixed"); int16
# activations with int8 weights ("16x8"). The last three are ROLE_INT8_MODEL's: the quantized model.
PRECISIONS = ("float32", "int8", "mixed", "16x8")
QUANTIZED_PRECISIONS = PRECISIONS[1:]
# The recovery ladder's steps (export.recovery), cheapest first.
RECOVERY_STEPS = ("int8", "calibration", "float-fallback", "16x8")

# How a picture is turned into the model's input (edge_runtime.pictures.preparation implements both).
PREPARATIONS = ("digit", "plain")
# The training images' look: light things on a dark background (MNIST, Fashion-MNIST), the
# reverse, or neither (colour photos). A plain preparation inverts pictures to match.
POLARITIES = ("light-on-dark", "dark-on-light", "as-is")


def _sha256():
    """A sha256 object from CPython's own implementation when it has one: hashlib would load
    OpenSSL's, which costs every command's start more than hashing a model file does."""
    for module_name in ("_sha256", "_sha2"):  # Python 3.11, 3.12+
        try:
            return __import__(module_name).sha256()
        except (ImportError, AttributeError):
            continue
    import hashlib

    return hashlib.sha256()


def sha256_of(path):
    """Return the hex sha256 of the file at `path`, read in chunks."""
    digest = _sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ManifestFormatError(errors.ModelFileError):
    """The manifest is not one this runtime can read: unknown version, missing or mistyped field."""


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


class _Fields:
    """Typed access to one JSON object; every refusal names the manifest and the dotted field."""

    def __init__(self, source, prefix, value):
        self.source, self.prefix = source, prefix
        if not isinstance(value, dict):
            self.fail(prefix or "(top level)", "must be an object", value)
        self.value = value

    def fail(self, field, problem, value):
        raise ManifestFormatError(
            f"{self.source}: field '{field}' {problem}, got {type(value).__name__} {json.dumps(value)[:40]}"
        )

    def get(self, key, check, problem, optional=False):
        field = f"{self.prefix}.{key}" if self.prefix else key
        if key not in self.value:
            if optional:
                return None
            raise ManifestFormatError(f"{self.source}: field '{field}' is missing")
        value = self.value[key]
        if not check(value):
            self.fail(field, problem, value)
        return value

    def child(self, key):
        field = f"{self.prefix}.{key}" if self.prefix else key
        if key not in self.value:
            raise ManifestFormatError(f"{self.source}: field '{field}' is missing")
        return _Fields(self.source, field, self.value[key])


class FileEntry:
    """One exported file as the manifest describes it."""

    __slots__ = ("name", "role", "sha256", "bytes", "precision", "test_accuracy", "images", "top1_counts", "details")

    def __init__(self, fields, name):
        self.name = name
        self.role = fields.get("role", lambda v: v in ROLES, f"must be one of {', '.join(ROLES)}")
        self.sha256 = fields.get("sha256", lambda v: isinstance(v, str) and len(v) == 64, "must be a 64-digit hex string")
        self.bytes = fields.get("bytes", lambda v: _is_count(v), "must be a positive integer")
        self.details = fields.value
        self.precision = self.test_accuracy = self.images = self.top1_counts = None
        if self.role in MODEL_ROLES:
            self.precision = fields.get("precision", lambda v: v in PRECISIONS, f"must be one of {', '.join(PRECISIONS)}")
            self.test_accuracy = fields.get("test_accuracy", lambda v: _is_number(v) and 0 <= v <= 1,
                                            "must be a number in [0, 1]")
            # How many test images had their top-1 probability in each bin of `top1_histogram`
            # (optional: manifests written before label-free drift have none; serve then reports no drift).
            counts = fields.get("top1_counts", lambda v: isinstance(v, list) and all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in v),
                "must be a list of non-negative integers", optional=True)
            self.top1_counts = None if counts is None else tuple(counts)
        else:
            self.images = fields.get("images", _is_count, "must be a positive integer")


class Manifest:
    """A parsed, checked manifest.json. Build it with `read_manifest` or `Manifest.parse`."""

    __slots__ = ("path", "document", "classes", "class_names_source", "input_shape", "preparation",
                 "polarity", "float_accuracy", "tolerance_points", "float_min_agreement", "calibration", "data_source",
                 "files", "top1_edges", "recovery")

    @classmethod
    def parse(cls, document, source="manifest"):
        """Check `document` (the JSON-decoded manifest) against the schema; return a Manifest.

        Raises: ManifestFormatError naming `source` and the first bad field.
        """
        self = cls()
        self.path = source
        self.document = document
        top = _Fields(source, "", document)
        version = top.get("format_version", lambda v: isinstance(v, int) and not isinstance(v, bool),
                          "must be an integer")
        if version != FORMAT_VERSION:
            raise ManifestFormatError(
                f"{source}: format_version {version} is not one this runtime reads (it reads {FORMAT_VERSION}); "
                "re-export the model with this version of mnist-edge"
            )
        self.classes = tuple(top.get(
            "classes", lambda v: isinstance(v, list) and len(v) >= 2 and all(isinstance(n, str) and n for n in v),
            "must be a list of at least two non-empty strings"))
        self.class_names_source = top.get("class_names_source", lambda v: isinstance(v, str), "must be a string")
        model_input = top.child("input")
        self.input_shape = tuple(model_input.get(
            "shape", lambda v: isinstance(v, list) and len(v) == 3 and all(_is_count(n) for n in v) and v[2] in (1, 3),
            "must be [height, width, channels] with 1 or 3 channels"))
        model_input.get("layout", lambda v: v == "NHWC", "must be 'NHWC'")
        model_input.get("scaling", lambda v: v == "uint8 / 255", "must be 'uint8 / 255'")
        preparation = top.child("preparation")
        self.preparation = preparation.get("name", lambda v: v in PREPARATIONS, f"must be one of {', '.join(PREPARATIONS)}")
        self.polarity = preparation.get("polarity", lambda v: v in POLARITIES, f"must be one of {', '.join(POLARITIES)}")
        source_model = top.child("source_model")
        self.float_accuracy = source_model.get("test_accuracy", lambda v: _is_number(v) and 0 <= v <= 1,
                                               "must be a number in [0, 1]")
        tolerances = top.child("tolerances")
        self.tolerance_points = tolerances.get("int8_max_accuracy_drop_points", lambda v: _is_number(v) and v >= 0,
                                               "must be a non-negative number")
        # The share of test images on which a float export had to agree with the source model: the
        # margin a float reference run on the device may differ from its recorded figures.
        self.float_min_agreement = tolerances.get("float_min_agreement", lambda v: _is_number(v) and 0 <= v <= 1,
                                                  "must be a number in [0, 1]")
        self.calibration = top.child("calibration").value
        top.child("calibration").get("images", _is_count, "must be a positive integer")
        top.child("calibration").get("seed", lambda v: isinstance(v, int) and not isinstance(v, bool), "must be an integer")
        self.data_source = top.child("data").get("source", lambda v: isinstance(v, str), "must be a string")
        self.recovery = None
        if "recovery" in document:
            self.recovery = parse_recovery(top.child("recovery"))
        files = top.child("files")
        self.files = {name: FileEntry(files.child(name), name) for name in files.value}
        if not self.files:
            raise ManifestFormatError(f"{source}: field 'files' lists no files")
        if len(self.files_with_role(ROLE_TEST_SET)) > 1 or len(self.files_with_role(ROLE_FLOAT_REFERENCE)) > 1:
            raise ManifestFormatError(f"{source}: field 'files' names more than one test set or float reference")
        self.top1_edges = self._parse_top1_histogram(top, source)
        return self

    def _parse_top1_histogram(self, top, source):
        """The top-1 probability bin edges (edge_runtime.drift), or None when the manifest has none.

        Each model's `top1_counts` must have one count per bin, adding up to the test set's images.
        """
        if top.get("top1_histogram", lambda v: isinstance(v, dict), "must be an object", optional=True) is None:
            if any(entry.top1_counts is not None for entry in self.files.values()):
                raise ManifestFormatError(f"{source}: files have 'top1_counts' but field 'top1_histogram' is missing")
            return None
        from edge_runtime import drift

        def valid_edges(value):
            try:
                return isinstance(value, list) and all(_is_number(edge) for edge in value) and bool(drift.check_edges(value))
            except ValueError:
                return False

        edges = tuple(top.child("top1_histogram").get("edges", valid_edges,
                                                      "must be numbers rising strictly from 0 to 1 (two bins or more)"))
        test_set = self.file_with_role(ROLE_TEST_SET)
        for name, entry in self.files.items():
            if entry.top1_counts is None:
                continue
            if len(entry.top1_counts) != len(edges) - 1:
                raise ManifestFormatError(f"{source}: field 'files.{name}.top1_counts' has {len(entry.top1_counts)} "
                                          f"counts for the {len(edges) - 1} bins of 'top1_histogram.edges'")
            if test_set is not None and sum(entry.top1_counts) != self.files[test_set].images:
                raise ManifestFormatError(f"{source}: field 'files.{name}.top1_counts' adds up to "
                                          f"{sum(entry.top1_counts)}, not the test set's {self.files[test_set].images} images")
        return edges

    def files_with_role(self, role):
        """Names of the files with `role`, in the manifest's order."""
        return [name for name, entry in self.files.items() if entry.role == role]

    def file_with_role(self, role):
        """The one file with `role` (test set, float reference), or None when the manifest has none."""
        names = self.files_with_role(role)
        return names[0] if names else None

    def class_name(self, index):
        return self.classes[int(index)]

    @property
    def num_classes(self):
        return len(self.classes)


def describe_precision(precision, float_layers=()):
    """What a model computes in, in plain words (info, compare's report)."""
    if precision == "mixed":
        names = ", ".join(name.split(";")[0] for name in float_layers)  # the converter joins fused ops' names with ';'
        return (f"int8 with {len(float_layers)} layer{'s' if len(float_layers) != 1 else ''} kept in float"
                + (f" ({names})" if names else ""))
    return {"16x8": "16x8 (int16 activations, int8 weights)", "int8": "int8", "float32": "float32"}[precision]


def parse_recovery(fields):
    """Check the `recovery` section (what the export's recovery ladder tried and chose, per quantized
    file); return it as a dict."""
    fields.child("validation").get("images", _is_count, "must be a positive integer")
    models = fields.child("models")
    for name in models.value:
        parse_recovered_model(models.child(name))
    return fields.value


def parse_recovered_model(fields):
    fields.get("chosen", lambda v: v in RECOVERY_STEPS, f"must be one of {', '.join(RECOVERY_STEPS)}")
    fields.get("precision", lambda v: v in QUANTIZED_PRECISIONS, f"must be one of {', '.join(QUANTIZED_PRECISIONS)}")
    fields.get("float_layers", lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v),
               "must be a list of tensor names")
    steps = fields.get("steps", lambda v: isinstance(v, list) and len(v) >= 1, "must be a non-empty list")
    for position in range(len(steps)):
        step = _Fields(fields.source, f"{fields.prefix}.steps[{position}]", steps[position])
        step.get("step", lambda v: v in RECOVERY_STEPS, f"must be one of {', '.join(RECOVERY_STEPS)}")
        step.get("passed", lambda v: isinstance(v, bool), "must be true or false")
        step.child("validation").get("drop_interval_points",
                                     lambda v: isinstance(v, list) and len(v) == 2 and all(map(_is_number, v)),
                                     "must be [low, high] in points")


def read_manifest(path):
    """Read and check the manifest at `path`; return a Manifest.

    Raises: ModelFileError naming the file when it is missing or not JSON; ManifestFormatError for
    an unknown version or a missing or mistyped field.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.loads(handle.read())
    except FileNotFoundError:
        raise errors.ModelFileError(f"{path}: no such manifest") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise errors.ModelFileError(f"{path}: not a readable manifest: {error}") from None
    return Manifest.parse(document, source=str(path))


def manifest_beside(model_path):
    """Return the Manifest in the model's directory, or None when there is none."""
    candidate = os.path.join(os.path.dirname(os.fspath(model_path)), MANIFEST_NAME)
    return read_manifest(candidate) if os.path.exists(candidate) else None


def verify_against_manifest(path, manifest):
    """Raise IntegrityError unless the file's sha256 and size match its entry in `manifest`.

    Returns the manifest's FileEntry for the file. A file the manifest does not list is refused too:
    a model dropped into a bundle directory by hand is exactly what this check is for.
    """
    path = os.fspath(path)
    entry = manifest.files.get(os.path.basename(path))
    if entry is None:
        raise errors.IntegrityError(f"{path}: not listed in the manifest beside it")
    try:
        actual = sha256_of(path)
    except FileNotFoundError:
        raise errors.ModelFileError(f"{path}: listed in the manifest but missing") from None
    except OSError as error:
        raise errors.ModelFileError(f"{path}: cannot read: {error.strerror or error}") from None
    if actual != entry.sha256:
        raise errors.IntegrityError(
            f"{path}: sha256 {actual[:16]}… does not match the manifest's {entry.sha256[:16]}…; "
            "the file was changed or damaged after export"
        )
    return entry
