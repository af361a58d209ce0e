"""The bundle check: its int8 models on its test set against its float reference, with one verdict.

`eval` on the device and `serve`'s start-up gate both call `check`, so they pick the test set,
load and run the float reference, check the manifest's float figures and judge each model the same
way, with the same lines.
"""

import dataclasses
import time
import typing

from edge_runtime import bundle, errors, evaluation, manifest as manifest_module

# Where the float figure a model is judged against comes from: a phrase that follows the figure.
SOURCE_EXPORT = "recorded at export on the whole test set"


@dataclasses.dataclass(frozen=True)
class CheckImages:
    """The images a check runs on; `whole` when they are the manifest's verified test set, all of it."""

    images: typing.Any
    labels: typing.Any
    whole: bool


@dataclasses.dataclass(frozen=True)
class BundleCheck:
    """The verdict: one Evaluation per model (its float_accuracy the figure it was judged against)."""

    results: tuple
    reference: typing.Optional[evaluation.Evaluation]
    float_accuracy_source: str  # follows the float figure: "recorded at export on the whole test set"
    tolerance_points: float
    failures: tuple  # one line per failed condition
    seconds: float

    @property
    def passed(self):
        return not self.failures

    def summary(self, index=0):
        """One model's figures and the verdict, JSON-ready (serve's /api/info "self_check")."""
        result = self.results[index]
        return {
            "images": result.images,
            "accuracy": result.accuracy,
            "float_accuracy": result.float_accuracy,
            "float_accuracy_source": self.float_accuracy_source,
            "drop_points": result.drop_points,
            "agreement_with_float": result.agreement_with_float,
            "tolerance_points": self.tolerance_points,
            "failures": list(self.failures),
            "passed": self.passed,
            "seconds": self.seconds,
        }


def images_to_check(directory, document, path=None, image_count=None):
    """The images to check on: the manifest's test set, verified against it, or the .npz at `path`
    (checked for shape and classes only); of either, its first `image_count` when given.

    Raises: ModelFileError when the manifest names no test set and no `path` is given;
    InputError or IntegrityError for a test set that is not what it should be.
    """
    if path is not None:
        images, labels = evaluation.load_test_set(path, document.input_shape, document.num_classes)
        return CheckImages(images[:image_count], labels[:image_count], whole=False)
    name = document.file_with_role(manifest_module.ROLE_TEST_SET)
    if name is None:
        raise errors.ModelFileError(f"{directory}: the manifest names no test set; give --test-set")
    images, labels = evaluation.load_test_set(directory / name, document.input_shape, document.num_classes,
                                              manifest=document)
    if image_count is not None and image_count < len(labels):
        return CheckImages(images[:image_count], labels[:image_count], whole=False)
    return CheckImages(images, labels, whole=True)


def load_reference(directory, document, backend=None, threads=None, check_integrity=True, allow_missing=False):
    """The bundle's float reference as a Classifier, and a note when it cannot run here.

    Returns (Classifier or None, note or None): None without a note when the manifest names no
    reference (or `allow_missing` and its file is gone); None with a note when no installed
    interpreter runs float models. `backend` runs it when it can.
    Raises: ModelFileError when the reference is listed but missing (unless `allow_missing`),
    IntegrityError when it is not the file the manifest describes.
    """
    from edge_runtime.classifier import Classifier

    path = bundle.float_reference(directory, document, allow_missing)
    if path is None:
        return None, None
    chosen = bundle.reference_backend(path, backend)
    if chosen is None:
        return None, f"no agreement with {path.name}: no installed interpreter runs float models"
    return Classifier.load(path, backend=chosen, threads=threads, check_integrity=check_integrity), None


def check(models, reference, test, document, tolerance_points=None, strict=False, progress=None):
    """Evaluate loaded `models` (Classifiers) on `test` (CheckImages) against the float `reference`.

    On the manifest's whole test set each model is judged against the float accuracy recorded at
    export, and the reference run here must reproduce the manifest's float figures. On other images
    (a part of the set, another set) the figures recorded for the whole set do not apply: the
    reference run here on the same images gives the float figure. `tolerance_points` None means the
    manifest's. `progress(name, total)`, when given, returns a callback for `evaluation.evaluate`.
    Returns: BundleCheck.
    """
    started = time.perf_counter()
    tolerance_points = document.tolerance_points if tolerance_points is None else tolerance_points
    images, labels = test.images, test.labels
    model_paths = {model.path for model in models}

    def report(name):
        return None if progress is None else progress(name, len(labels))

    reference_result = None
    if reference is not None and reference.path not in model_paths:
        reference_result = evaluation.evaluate(reference, images, labels, document, progress=report(reference.path.name))
    results = [evaluation.evaluate(model, images, labels, document, progress=report(model.path.name),
                                   float_labels=None if reference_result is None else reference_result.labels)
               for model in models]
    source = SOURCE_EXPORT
    failures = []
    if reference_result is not None and test.whole:
        failures = evaluation.reference_failures(document, reference_result)
    elif reference_result is not None:
        results = [dataclasses.replace(result, float_accuracy=reference_result.accuracy) for result in results]
        source = f"from {reference.path.name} run here on the same {len(labels)} images"
    failures += evaluation.failures(results, tolerance_points, strict)
    return BundleCheck(results=tuple(results), reference=reference_result, float_accuracy_source=source,
                       tolerance_points=tolerance_points, failures=tuple(failures),
                       seconds=time.perf_counter() - started)
