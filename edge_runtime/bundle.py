"""A bundle's files found by their manifest roles: the model a command runs, and the float reference.

Every command takes a bundle directory or one model file in it. A directory's model is the first
int8 model its manifest lists that an installed interpreter runs; file names are never assumed.
The float reference and its interpreter are chosen here too, once for `eval` and `serve`.
"""

import os

from edge_runtime import backends, errors, manifest as manifest_module


def model_path(target, backend=None):
    """The model file a command runs for `target`: a bundle directory's int8 model (see `int8_model`),
    or `target` itself when it is a file (its manifest, if any, is read when the model is loaded).

    Raises: ModelFileError (no such path, no manifest in the directory, no int8 model there),
    BackendUnavailableError.
    """
    if os.path.isdir(target):
        target = backends.as_path(target)
        if not (target / manifest_module.MANIFEST_NAME).exists():
            raise errors.ModelFileError(f"{target}: a directory without a {manifest_module.MANIFEST_NAME}: "
                                        "give a bundle directory or a model file")
        return int8_model(target, manifest_module.read_manifest(target / manifest_module.MANIFEST_NAME), backend)
    if not os.path.exists(target):
        raise errors.ModelFileError(f"{target}: no such bundle directory or model file")
    return target


def runnable(path, backend=None):
    """True when `backend` (or, when None, some installed interpreter) runs the model file at `path`."""
    names = backends.interpreters_for(path)
    if backend is not None:
        return backend in names
    return bool(set(names) & set(backends.available_backends()))


def int8_model(directory, document, backend=None):
    """The path of the first int8 model the manifest lists that is present and that `backend` (or an
    installed interpreter) runs. Raises: ModelFileError or BackendUnavailableError saying which."""
    listed = [directory / name for name in document.files_with_role(manifest_module.ROLE_INT8_MODEL)]
    present = [path for path in listed if path.is_file()]
    if not listed:
        raise errors.ModelFileError(f"{directory}: the manifest lists no {manifest_module.ROLE_INT8_MODEL}")
    if not present:
        raise errors.ModelFileError(
            f"{directory}: {', '.join(path.name for path in listed)} listed in the manifest but missing")
    for path in present:
        if runnable(path, backend):
            return path
    wanted = f"backend {backend!r}" if backend else "installed interpreter"
    raise errors.BackendUnavailableError(
        f"{directory}: no {wanted} runs its int8 models ({', '.join(path.name for path in present)}); "
        "'pip install mnist-edge[edge]'")


def missing_files_message(directory, missing):
    """The one line for files a manifest lists that the directory lacks."""
    return f"{directory}: {', '.join(path.name for path in missing)} listed in the manifest but missing"


def float_reference(directory, document, allow_missing=False):
    """The float reference's path, or None when the manifest names none (or, with `allow_missing`,
    when its file is gone). Raises: ModelFileError when the manifest names one that is missing."""
    name = document.file_with_role(manifest_module.ROLE_FLOAT_REFERENCE)
    if name is None:
        return None
    path = backends.as_path(directory) / name
    if not path.is_file():
        if allow_missing:
            return None
        raise errors.ModelFileError(missing_files_message(directory, [path]))
    return path


def reference_backend(path, forced=None):
    """The interpreter that runs the float reference at `path`: `forced` when it can (a like-for-like
    check on the device), else the first installed one that runs float models; None when none does.

    The numpy engine runs quantized models only, so it never runs a float reference.
    """
    installed = set(backends.available_backends())
    usable = [name for name in backends.interpreters_for(path)
              if name in installed and name not in backends.INT8_ONLY_BACKENDS]
    if not usable:
        return None
    return forced if forced in usable else usable[0]
