"""Where installed versions live on the device, and the only ways they change.

    ROOT/versions/<identity>/bundle/     the unpacked bundle (manifest, models, test set, wheel, unit)
    ROOT/versions/<identity>/venv/       its own Python environment, with its wheel installed
    ROOT/versions/<identity>/installed.json   written last: a version without it is unfinished
    ROOT/current -> versions/<identity>  the served version, a symlink switched with one rename
    ROOT/state.json                      the last install's outcome and why; the previous version
    ROOT/install.lock                    held (flock) by the one install or rollback running

Every change is made so that a process killed at any instant (kill -9, power loss) leaves
`current` pointing at a finished version: a version directory only counts once installed.json
is in it, and `current` is replaced by rename(2), never removed and re-created.
"""

import contextlib
import datetime
import errno
import fcntl
import hashlib
import json
import os
import pathlib
import shutil
import tarfile

from edge_runtime import atomic_files, errors, manifest as manifest_module

DEFAULT_ROOT = pathlib.Path("/opt/mnist-edge")
TRUSTED_KEYS_NAME = "trusted-keys"
VERSIONS = "versions"
CURRENT = "current"
STATE_NAME = "state.json"
LOCK_NAME = "install.lock"
FINISHED_MARK = "installed.json"
BUNDLE_DIR = "bundle"
VENV_DIR = "venv"
# The top-level directory inside every bundle tarball (export/bundle.py writes it).
BUNDLE_TOP = "mnist-edge-bundle"


class BusyError(errors.EdgeRuntimeError):
    """Another install or rollback holds the root's lock."""


class DiskFullError(errors.EdgeRuntimeError):
    """Not enough free space under the root to unpack and install a version."""


def identity(document, manifest_bytes):
    """A version's name: the export's time and the first 12 hex digits of its manifest's sha256.

    Names sort by export time, and two different exports never share one.
    """
    created = str(document.get("created", "")).replace("-", "").replace(":", "")
    stamp = created.split("+")[0] or "undated"
    return f"{stamp}-{hashlib.sha256(manifest_bytes).hexdigest()[:12]}"


class BundleArchive:
    """A bundle tarball, checked before anything is written: plain files under mnist-edge-bundle/ only,
    with a readable manifest. Attributes: path, members (TarInfo list), manifest, identity, size."""

    def __init__(self, path):
        self.path = pathlib.Path(path)
        try:
            with tarfile.open(self.path, "r:gz") as archive:
                self.members = archive.getmembers()
                for member in self.members:
                    parts = pathlib.PurePosixPath(member.name).parts
                    if (not member.isfile() and not member.isdir()) or not parts or parts[0] != BUNDLE_TOP \
                            or ".." in parts or member.name.startswith("/"):
                        raise errors.InputError(f"{self.path}: unexpected member {member.name!r}: not a mnist-edge bundle")
                manifest_member = archive.getmember(f"{BUNDLE_TOP}/{manifest_module.MANIFEST_NAME}")
                manifest_bytes = archive.extractfile(manifest_member).read()
        except KeyError:
            raise errors.InputError(f"{self.path}: no {BUNDLE_TOP}/{manifest_module.MANIFEST_NAME} inside: "
                                    "not a mnist-edge bundle") from None
        except FileNotFoundError:
            raise errors.InputError(f"{self.path}: no such bundle") from None
        except (OSError, tarfile.TarError, EOFError) as error:
            raise errors.InputError(f"{self.path}: not a readable bundle tarball: {error}") from None
        try:
            document = json.loads(manifest_bytes)
        except ValueError as error:
            raise errors.InputError(f"{self.path}: its manifest is not JSON: {error}") from None
        self.manifest = manifest_module.Manifest.parse(document, source=f"{self.path}:{manifest_module.MANIFEST_NAME}")
        self.identity = identity(document, manifest_bytes)
        self.size = sum(member.size for member in self.members)

    def wheel_name(self):
        """The file name of the mnist-edge wheel inside; InputError when there is not exactly one."""
        wheels = [pathlib.PurePosixPath(member.name).name for member in self.members
                  if member.name.endswith(".whl") and pathlib.PurePosixPath(member.name).name.startswith("mnist_edge-")]
        if len(wheels) != 1:
            raise errors.InputError(f"{self.path}: holds {len(wheels)} mnist-edge wheels, needs exactly one")
        return wheels[0]

    def unpack(self, destination, between=lambda: None):
        """Write every member's bytes under `destination` (its mnist-edge-bundle/ prefix dropped);
        `between()` is called after each file (a checkpoint for the fault tests)."""
        destination.mkdir(parents=True, exist_ok=True)
        with tarfile.open(self.path, "r:gz") as archive:
            for member in archive.getmembers():
                relative = pathlib.PurePosixPath(member.name).relative_to(BUNDLE_TOP)
                target = destination / relative
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.extractfile(member) as source, open(target, "wb") as output:
                    shutil.copyfileobj(source, output)
                between()


class Store:
    """The versions under one root directory (see the module's description)."""

    def __init__(self, root):
        self.root = pathlib.Path(root)
        self.versions = self.root / VERSIONS
        self.current_link = self.root / CURRENT
        self.state_path = self.root / STATE_NAME

    def version_dir(self, name):
        return self.versions / name

    def is_finished(self, name):
        return (self.version_dir(name) / FINISHED_MARK).is_file()

    def current(self):
        """The current version's name, or None when there is none yet."""
        try:
            target = os.readlink(self.current_link)
        except FileNotFoundError:
            return None
        return pathlib.PurePath(target).name

    def finished_versions(self):
        """[(name, its installed.json)] of every finished version, oldest install first."""
        found = []
        if self.versions.is_dir():
            for directory in self.versions.iterdir():
                mark = directory / FINISHED_MARK
                if directory.is_dir() and mark.is_file():
                    try:
                        found.append((directory.name, json.loads(mark.read_text())))
                    except (OSError, ValueError):
                        continue
        return sorted(found, key=lambda item: (item[1].get("installed_at", ""), item[0]))

    def unfinished_versions(self):
        """Names of version directories an interrupted install left without installed.json."""
        if not self.versions.is_dir():
            return []
        return sorted(directory.name for directory in self.versions.iterdir()
                      if directory.is_dir() and not (directory / FINISHED_MARK).is_file())

    def remove_unfinished(self):
        """Delete what interrupted installs left (never the current version); return the names removed."""
        removed = []
        for name in self.unfinished_versions():
            if name != self.current():
                shutil.rmtree(self.version_dir(name), ignore_errors=True)
                removed.append(name)
        for leftover in self.root.glob(f".{CURRENT}.*"):
            leftover.unlink(missing_ok=True)
        atomic_files.remove_partials(self.root)
        return removed

    def mark_finished(self, name, details):
        """Write installed.json into the version: from now on it is a version `current` may point at."""
        atomic_files.write_text_atomically(self.version_dir(name) / FINISHED_MARK, json.dumps(details, indent=2) + "\n")
        sync_directory(self.version_dir(name))

    def switch(self, name, between=lambda: None):
        """Point `current` at version `name` in one rename: a symlink made under a temporary name,
        then os.replace onto `current`. Returns the version it pointed at before (or None).

        Raises: ValueError when `name` is not a finished version.
        """
        if not self.is_finished(name):
            raise ValueError(f"{self.version_dir(name)}: not a finished version")
        previous = self.current()
        temporary = self.root / f".{CURRENT}.{os.getpid()}"
        temporary.unlink(missing_ok=True)
        os.symlink(pathlib.Path(VERSIONS) / name, temporary)
        between()
        os.replace(temporary, self.current_link)
        sync_directory(self.root)
        return previous

    def read_state(self):
        """The state file's document ({} when there is none or it is unreadable)."""
        try:
            document = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}
        return document if isinstance(document, dict) else {}

    def write_state(self, **changes):
        """Merge `changes` into the state file, written whole or not at all; return the new document."""
        document = {**self.read_state(), **changes}
        atomic_files.write_text_atomically(self.state_path, json.dumps(document, indent=2) + "\n")
        return document

    def prune(self, keep, protect=(), between=lambda: None):
        """Remove the oldest finished versions beyond `keep`, never the current one or `protect`; return the names removed.

        `between()` is called once a version is marked unfinished, before its files go (a checkpoint for the fault tests).
        """
        current = self.current()
        finished = [name for name, _ in self.finished_versions()]
        removable = [name for name in finished if name != current and name not in protect]
        excess = len(finished) - keep
        removed = []
        for name in removable[:max(0, excess)]:
            # The mark goes first: a prune killed half-way leaves an unfinished directory, swept later.
            (self.version_dir(name) / FINISHED_MARK).unlink(missing_ok=True)
            between()
            shutil.rmtree(self.version_dir(name), ignore_errors=True)
            removed.append(name)
        return removed

    @contextlib.contextmanager
    def locked(self):
        """Hold ROOT/install.lock for the block; BusyError at once when another process holds it.

        flock is released by the kernel when its holder dies, so a killed install never leaves the
        root locked.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        handle = open(self.root / LOCK_NAME, "a+")
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise BusyError(f"{self.root}: another install or rollback is running ({holder}); "
                                "try again when it has finished") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}")
            handle.flush()
            yield
        finally:
            handle.close()


def root_of_bundle(bundle_dir):
    """The install root that `bundle_dir` was installed under (ROOT/versions/<identity>/bundle,
    reached directly or through ROOT/current), or None for a bundle unpacked anywhere else."""
    bundle = pathlib.Path(bundle_dir).resolve()
    root = bundle.parent.parent.parent
    if bundle.name == BUNDLE_DIR and bundle.parent.parent.name == VERSIONS and (root / VERSIONS).is_dir():
        return root
    return None


def sync_directory(path):
    """fsync a directory, so the renames in it survive a power loss."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def check_free_space(path, needed_bytes):
    """Raise DiskFullError unless the file system holding `path` has `needed_bytes` free."""
    free = shutil.disk_usage(path).free
    if free < needed_bytes:
        raise DiskFullError(f"{path}: {free / 1e6:,.0f} MB free, the install needs about {needed_bytes / 1e6:,.0f} MB; "
                            "nothing was switched")


def is_disk_full(error):
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
