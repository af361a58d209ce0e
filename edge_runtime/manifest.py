"""The manifest that travels with exported models: reading it and checking files against it."""

import hashlib
import json
import pathlib

from edge_runtime import errors

MANIFEST_NAME = "manifest.json"


def sha256_of(path):
    """Return the hex sha256 of the file at `path`, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(path):
    """Parse the manifest at `path`; raise ModelFileError naming it when missing or not valid JSON."""
    path = pathlib.Path(path)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise errors.ModelFileError(f"{path}: no such manifest") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise errors.ModelFileError(f"{path}: not a readable manifest: {error}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise errors.ModelFileError(f"{path}: not an mnist-edge manifest (no 'files' table)")
    return manifest


def manifest_beside(model_path):
    """Return the manifest in the model's directory, or None when there is none."""
    candidate = pathlib.Path(model_path).with_name(MANIFEST_NAME)
    return read_manifest(candidate) if candidate.exists() else None


def verify_against_manifest(model_path, manifest):
    """Raise IntegrityError unless the file's sha256 matches its entry in `manifest`.

    Returns the manifest's entry for the file. A file the manifest does not list is refused too:
    a model dropped into a bundle directory by hand is exactly what this check is for.
    """
    model_path = pathlib.Path(model_path)
    entry = manifest["files"].get(model_path.name)
    if entry is None:
        raise errors.IntegrityError(f"{model_path}: not listed in the manifest beside it")
    actual = sha256_of(model_path)
    if actual != entry.get("sha256"):
        raise errors.IntegrityError(
            f"{model_path}: sha256 {actual[:16]}… does not match the manifest's "
            f"{str(entry.get('sha256'))[:16]}…; the file was changed or damaged after export"
        )
    return entry
