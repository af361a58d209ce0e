"""`mnist-edge install`, `status` and `rollback`: a new version through signature, gate, switch, probation.

    install BUNDLE   signature -> unpack -> environment -> gate (eval) -> switch `current` ->
                     restart -> probation -> keep it, or roll back to the previous version
    status           every installed version, which is current, the last install's outcome
    rollback         `current` back to the previous version, and restart

Exit statuses (the toolkit's, errors.py, and two of install's own):
    0  installed and through probation (or already current; or switched with no service to restart)
    1  refused before anything changed: unsigned, bad signature, untrusted key, bad bundle, disk full
    3  refused at the gate: eval's check failed on this device (eval's line is logged); nothing switched
    4  EXIT_ROLLED_BACK: switched, failed probation, and `current` is back on the previous version
    75 EXIT_BUSY: another install or rollback holds the lock (EX_TEMPFAIL: try again later)
Each step logs one line on stderr, "mnist-edge install: ...", which journald or Ansible keeps.
"""

import dataclasses
import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys

from edge_runtime import errors
from edge_runtime.install import environment, probation, signing, store

EXIT_ROLLED_BACK = 4
EXIT_BUSY = 75
# The fault tests name a checkpoint here, and the install kills itself there with SIGKILL: a real
# kill -9 at a known step, which no timing of an outside signal can promise.
KILL_AT_VARIABLE = "MNIST_EDGE_INSTALL_KILL_AT"
DEFAULT_SERVICE_UNIT = "mnist-edge.service"


@dataclasses.dataclass(frozen=True)
class InstallSettings:
    """Everything `install`, `status` and `rollback` were asked to do; their flags map onto it."""

    root: pathlib.Path = store.DEFAULT_ROOT
    keep: int = 3
    trusted_keys: pathlib.Path | None = None  # None: ROOT/trusted-keys
    allow_unsigned: bool = False
    gate_images: int | None = None  # the gate's eval on the first N test images (None: all)
    restart_command: str | None = None
    service_unit: str = DEFAULT_SERVICE_UNIT
    probation_settings: probation.ProbationSettings = probation.ProbationSettings()
    recipe: environment.Recipe = environment.Recipe()

    @property
    def trusted_keys_path(self):
        return self.trusted_keys or self.root / store.TRUSTED_KEYS_NAME


def log(message):
    print(f"mnist-edge install: {errors.one_line(message)}", file=sys.stderr, flush=True)


def checkpoint(name):
    if os.environ.get(KILL_AT_VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def restart_service(settings, say=log):
    """Restart the service through systemd where it runs, else --restart-command.

    Returns: True when a restart was made, False when there is nothing to restart with.
    Raises: InstallError when the restart command fails.
    """
    if settings.restart_command:
        command = shlex.split(settings.restart_command)
        what = settings.restart_command
    elif shutil.which("systemctl") and pathlib.Path("/run/systemd/system").is_dir():
        command = ["systemctl", "restart", settings.service_unit]
        what = " ".join(command)
    else:
        return False
    result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        last = ([line for line in result.stderr.splitlines() if line.strip()] or ["no output"])[-1]
        raise environment.InstallError(f"restart ({what}) failed with status {result.returncode}: {last}")
    say(f"restarted the service ({what})")
    return True


def install(bundle, settings, say=log):
    """Install the bundle tarball at `bundle` under settings.root; return the exit status (see above).

    Raises: EdgeRuntimeError subclasses for refusals before anything changed (exit 1), BusyError.
    """
    bundle = pathlib.Path(bundle)
    if settings.allow_unsigned:
        say(f"warning: --allow-unsigned: {bundle.name}'s signature is not checked (for development only)")
    else:
        key, comment = signing.verify_bundle(bundle, settings.trusted_keys_path)
        say(f"signature good: {bundle.name} signed by {key}" + (f" ({comment})" if comment else ""))
    archive = store.BundleArchive(bundle)
    versions = store.Store(settings.root)
    with versions.locked():
        swept = versions.remove_unfinished()
        if swept:
            say(f"removed what interrupted installs left: {', '.join(swept)}")
        name, previous = archive.identity, versions.current()
        checkpoint("locked")
        if name == previous:
            return already_current(versions, archive, bundle, settings, say)
        fresh = not versions.is_finished(name)
        if fresh:
            prepare_version(archive, versions, settings.recipe, say)
        images = settings.gate_images
        say(f"gate: eval on {name} with its own environment"
            + (f", on the first {images} test images" if images else ""))
        gate = environment.run_gate(versions.version_dir(name), ("--images", str(images)) if images else ())
        checkpoint("gated")
        if not gate.passed:
            if fresh:
                shutil.rmtree(versions.version_dir(name), ignore_errors=True)
            say(f"refused at the gate, {previous or 'no version'} stays current: {gate.reason}")
            versions.write_state(last=outcome(name, bundle, "refused-at-gate", gate.reason))
            return errors.EXIT_FAILED_CHECK
        say(f"gate passed: eval's check holds for {name} on this device")
        if fresh:
            versions.mark_finished(name, {"identity": name, "installed_at": store.now(), "bundle": str(bundle),
                                          "created": archive.manifest.document.get("created"),
                                          "wheel": archive.wheel_name()})
        checkpoint("finished")
        # The intent first: an install killed after the switch finds it, and finishes the probation.
        versions.write_state(previous=previous, last=outcome(name, bundle, "switching", f"from {previous or 'no version'}"))
        versions.switch(name, between=lambda: checkpoint("switching"))
        checkpoint("switched")
        say(f"switched current to {name} (was {previous or 'none'})")
        return restart_and_watch(versions, archive, bundle, previous, settings, say)


def already_current(versions, archive, bundle, settings, say):
    """The bundle's version is current: nothing to do, unless its install was killed before probation ended."""
    state = versions.read_state()
    last = state.get("last") or {}
    if last.get("identity") == archive.identity and last.get("outcome") in ("switching", "probation"):
        say(f"{archive.identity} is current, but its install stopped before probation ended: resuming there")
        return restart_and_watch(versions, archive, bundle, state.get("previous"), settings, say)
    say(f"{archive.identity} is already current; nothing to do")
    return 0


def restart_and_watch(versions, archive, bundle, previous, settings, say):
    """After the switch: restart the service, run probation, then keep the version or roll back."""
    name = archive.identity
    versions.write_state(current=name, previous=previous,
                         last=outcome(name, bundle, "probation", f"switched from {previous or 'no version'}"))
    try:
        restarted = restart_service(settings, say)
    except environment.InstallError as error:
        return roll_back_after(versions, name, previous, bundle, settings, str(error), say)
    if not restarted:
        say("no systemd and no --restart-command: the service was not restarted, so no probation")
        return finish(versions, name, previous, bundle, settings, "switched; nothing restarted, no probation", say)
    if settings.probation_settings.seconds == 0:
        return finish(versions, name, previous, bundle, settings, "restarted; no probation (--probation-seconds 0)", say)
    say(f"probation: {settings.probation_settings.seconds:g} s on {settings.probation_settings.service_url}")
    verdict = probation.watch(settings.probation_settings, {entry.sha256 for entry in archive.manifest.files.values()}, say)
    checkpoint("probation")
    if verdict.passed:
        return finish(versions, name, previous, bundle, settings, verdict.reason, say)
    return roll_back_after(versions, name, previous, bundle, settings, verdict.reason, say)


def prepare_version(archive, versions, recipe, say):
    """Unpack the bundle and make its environment in versions/<identity>/; on any failure remove it again."""
    directory = versions.version_dir(archive.identity)
    needed = 2 * archive.size + (0 if recipe.no_deps else environment.ENVIRONMENT_BYTES)
    versions.versions.mkdir(parents=True, exist_ok=True)
    store.check_free_space(versions.versions, needed)
    say(f"unpacking {archive.path.name} into {directory}")
    try:
        archive.unpack(directory / store.BUNDLE_DIR, between=lambda: checkpoint("unpacking"))
        checkpoint("unpacked")
        say(f"installing {archive.wheel_name()} into {directory / store.VENV_DIR}"
            + (f" (extras {recipe.extras})" if recipe.extras else ""))
        environment.make_environment(directory, directory / store.BUNDLE_DIR / archive.wheel_name(), recipe)
        checkpoint("environment")
    except BaseException as error:
        shutil.rmtree(directory, ignore_errors=True)
        if store.is_disk_full(error):
            raise store.DiskFullError(f"{directory}: no space left on device while unpacking; nothing was switched") from None
        raise


def outcome(name, bundle, result, reason):
    return {"identity": name, "bundle": str(bundle), "outcome": result, "reason": reason, "time": store.now()}


def finish(versions, name, previous, bundle, settings, reason, say):
    versions.write_state(last=outcome(name, bundle, "installed", reason))
    removed = versions.prune(settings.keep, protect={previous} if settings.keep >= 2 else set(),
                             between=lambda: checkpoint("pruning"))
    say(f"installed {name}: {reason}" + (f"; removed old {', '.join(removed)}" if removed else ""))
    return 0


def roll_back_after(versions, name, previous, bundle, settings, reason, say):
    """Probation failed: `current` back to `previous`, restart, one line, the state file; EXIT_ROLLED_BACK."""
    if previous is None or not versions.is_finished(previous):
        say(f"probation failed, and there is no previous version to go back to; {name} stays current: {reason}")
        versions.write_state(last=outcome(name, bundle, "failed-probation", reason))
        return EXIT_ROLLED_BACK
    versions.switch(previous)
    # A counter that only grows, for a fleet's alert (docs/fleet.md: mnist_edge_rollbacks_total).
    rollbacks = int(versions.read_state().get("rollbacks", 0)) + 1
    versions.write_state(current=previous, previous=name, rollbacks=rollbacks,
                         last=outcome(name, bundle, "rolled-back", reason))
    checkpoint("rolled-back")
    say(f"rolled back to {previous}: {reason}")
    try:
        restart_service(settings, lambda line: None)
    except environment.InstallError as error:
        say(f"warning: {error}")
    return EXIT_ROLLED_BACK


def rollback(settings, say=log):
    """`mnist-edge rollback`: switch `current` to the previous version (the state's, else the newest other one)."""
    versions = store.Store(settings.root)
    if not versions.root.is_dir():
        raise errors.InputError(f"{versions.root}: nothing installed there")
    with versions.locked():
        current = versions.current()
        candidates = [name for name, _ in versions.finished_versions() if name != current]
        recorded = versions.read_state().get("previous")
        target = recorded if recorded in candidates else (candidates[-1] if candidates else None)
        if target is None:
            raise errors.InputError(f"{versions.root}: no other installed version to roll back to")
        versions.switch(target)
        reason = f"by hand, from {current or 'none'}"
        versions.write_state(current=target, previous=current,
                             last=outcome(target, None, "rolled-back-by-hand", reason))
        say(f"rolled back to {target} ({reason})")
        if not restart_service(settings, say):
            say("no systemd and no --restart-command: restart the service yourself")
    return 0


def status(settings):
    """Every version under the root, the current one, and the last install's outcome, as one dict."""
    versions = store.Store(settings.root)
    current = versions.current()
    state = versions.read_state()
    return {
        "root": str(versions.root),
        "current": current,
        "previous": state.get("previous"),
        "versions": [{"identity": name, "current": name == current, "installed_at": details.get("installed_at"),
                      "created": details.get("created"), "wheel": details.get("wheel")}
                     for name, details in versions.finished_versions()],
        "unfinished": versions.unfinished_versions(),
        "last": state.get("last"),
        "rollbacks": int(state.get("rollbacks", 0)),  # automatic ones, after a failed probation
    }


def print_status(document):
    print(f"root     {document['root']}")
    if not document["versions"]:
        print("versions none installed")
    for version in document["versions"]:
        marker = "*" if version["current"] else " "
        print(f"{marker} {version['identity']}  exported {version['created'] or '-'}  installed {version['installed_at']}")
    for name in document["unfinished"]:
        print(f"  {name}  unfinished (an interrupted install; the next install removes it)")
    last = document["last"]
    if last:
        print(f"last     {last['outcome']}: {last['identity']} at {last['time']}: {last['reason']}")
    print(f"rollbacks {document['rollbacks']} after a failed probation, since the first install")
