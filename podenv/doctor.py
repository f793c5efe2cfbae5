"""`podenv doctor`: can this worker boot its release? Each check is one line, PASS or FAIL.

The checks read what `podenv boot` would read (the store, the channel, the release, the
volume, the driver) and change nothing but a scratch directory they remove again (and the
root directory, created as boot would). They test the volume's file semantics for real,
because RunPod's network volumes are a network filesystem and the facts we rely on
(exclusive create, directory rename, symlinks; link and flock for a file:// store) are
exactly those such filesystems get wrong.
"""

import errno
import fcntl
import os
import shutil
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podenv.errors import PodenvError
from podenv.fileio import mount_of
from podenv.log import get_logger
from podenv.manifest import Manifest
from podenv.progress import human_bytes
from podenv.resolve import ReleaseOptions, check_names, names_are_valid, resolve_target
from podenv.store import Store

if TYPE_CHECKING:
    from podenv.placement import DiskFigures

_log = get_logger("doctor")
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL
_STORE_FIX = "check PODENV_STORE, AWS_ENDPOINT_URL and the credentials"


@dataclass(frozen=True)
class CheckResult:
    check: str
    status: str  # pass, fail or skip (skip: a check it depends on failed, or nothing to check)
    detail: str
    fix: str | None = None

    @property
    def line(self) -> str:
        if self.status == "fail":
            return f"FAIL {self.check}: {self.detail} — fix: {self.fix}"
        return f"{self.status.upper()} {self.check}: {self.detail}"

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "status": self.status, "detail": self.detail, "fix": self.fix}


def passed(check: str, detail: str) -> CheckResult:
    return CheckResult(check, "pass", detail)


def failed(check: str, detail: str, fix: str) -> CheckResult:
    return CheckResult(check, "fail", detail, fix)


def skipped(check: str, detail: str) -> CheckResult:
    return CheckResult(check, "skip", detail)


def failed_with(check: str, error: PodenvError, default_fix: str) -> CheckResult:
    """The error's own sentence and fix (``default_fix`` for an error that carries none)."""
    return failed(check, error.what.rstrip("."), (error.fix or default_fix).rstrip("."))


@dataclass
class _Findings:
    """What earlier checks learnt that later ones need."""

    options: ReleaseOptions
    # Check the release against this driver CUDA version instead of the GPU's: "would it
    # run on hosts with driver X?" (RunPod's CUDA filter), asked from anywhere.
    driver_cuda: str | None = None
    store: Store | None = None
    pointer: bytes | None = None
    manifest: Manifest | None = None
    volume_ok: bool = False
    # The worker's own disk, where placement=local puts the env (PODENV_LOCAL_ROOT).
    local_root: Path | None = None


# The store and the release


def check_store(findings: _Findings) -> CheckResult:
    """Open the store and read one object with these credentials: the env's channel pointer."""
    from podenv.store import open_store

    options = findings.options
    if not options.store_url:
        return failed("store", "no store given", "set PODENV_STORE (or --store) to s3://BUCKET/PREFIX")
    try:
        store = open_store(options.store_url)
        if options.env and names_are_valid(options):
            pointer = store.read_channel(options.env, options.channel)
            findings.pointer = pointer.data if pointer else None
            seen = f"channel {options.channel} of {options.env} {'read' if pointer else 'is absent'}"
        else:
            seen = f"{len(store.channel_objects())} channel objects listed"
    except PodenvError as error:
        return failed_with("store", error, _STORE_FIX)
    findings.store = store
    if not store.url.startswith("s3://"):
        return passed("store", f"{store.url} is readable: {seen}")
    endpoint = store.endpoint or "AWS"
    return passed("store", f"{store.url} (endpoint {endpoint}) answered with these credentials: {seen}")


def check_release(findings: _Findings) -> CheckResult:
    from podenv.resolve import load_manifest

    options, store = findings.options, findings.store
    if not options.env:
        return skipped("release", "no env given (PODENV_ENV or --env): no release to resolve")
    if store is None:
        return skipped("release", "the store failed: the release cannot be read")
    try:
        check_names(options)
        target = resolve_target(options, store, findings.pointer)
        manifest = load_manifest(store, options.env, target)
    except PodenvError as error:
        return failed_with("release", error, f"list what is published with `podenv releases {options.env}`")
    how = target.how
    findings.manifest = manifest
    unpacked = sum(layer.unpacked_size for layer in manifest.layers)
    return passed(
        "release",
        f"{manifest.name} {manifest.version} ({how}), {manifest.digest}, {len(manifest.layers)} layers, "
        f"{human_bytes(unpacked)} unpacked, CUDA {manifest.cuda or 'not needed'}",
    )


# The volume


def _mount_text(path: Path) -> str:
    mount_point, filesystem = mount_of(path)
    return f"{filesystem} at {mount_point}" if mount_point else "unknown filesystem"


def _write_probe(root: Path) -> None:
    """Create, write, sync and remove a file: what every install does, in miniature."""
    path = root / f".podenv-doctor-write.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    descriptor = os.open(path, _CREATE, 0o644)
    try:
        os.write(descriptor, b"podenv doctor\n")
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
        path.unlink(missing_ok=True)


def check_volume(findings: _Findings) -> CheckResult:
    from podenv.boot.space import space_free
    from podenv.runpod.mount import FIX, missing_network_volume
    from podenv.volume import Volume

    root = findings.options.root
    missing = missing_network_volume(root)
    if missing:
        return failed("volume", missing, FIX)
    created = not root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
        _write_probe(root)
        free = space_free(Volume(root), findings.options.quota)
        filesystem = os.statvfs(root)
    except OSError as error:
        return failed(
            "volume",
            f"cannot write to {root}: {error.strerror or error}",
            "attach the network volume (RunPod mounts it at /runpod-volume) "
            "or set PODENV_ROOT to a directory this user can write",
        )
    findings.volume_ok = True
    total = filesystem.f_blocks * filesystem.f_frsize
    detail = f"{root} is writable{' (created)' if created else ''}, on {_mount_text(root)}, "
    detail += f"{human_bytes(free)} free of {human_bytes(total)}"
    if findings.options.quota is not None:
        detail += f" (quota {human_bytes(findings.options.quota)})"
    return passed("volume", detail)


def check_space(findings: _Findings) -> CheckResult:
    """The layers the volume lacks must fit, with boot's margin: boot's own rule."""
    from podenv.boot.space import SPACE_MARGIN, space_free, space_needed
    from podenv.boot.space import check_space as boot_check_space
    from podenv.volume import Volume, layer_is_installed

    options = findings.options
    if not findings.volume_ok:
        return skipped("space", "the volume is not usable: nothing to measure")
    if findings.manifest is None:
        return skipped("space", "no release resolved: no size to compare with the free space")
    volume = Volume(options.root)
    layers = findings.manifest.layers
    missing = [layer for layer in layers if not layer_is_installed(volume, layer.digest)]
    release = f"{findings.manifest.name} {findings.manifest.version}"
    if not missing:
        return passed("space", f"all {len(layers)} layers of {release} are on the volume: nothing to fetch")
    try:
        boot_check_space(volume, missing, options.quota)
    except PodenvError as error:
        return failed_with("space", error, "grow the volume or run `podenv gc`")
    needed = space_needed(missing, keep_blobs=False)
    return passed(
        "space",
        f"{release} needs {human_bytes(needed)} for {len(missing)} of {len(layers)} layers "
        f"(+{human_bytes(SPACE_MARGIN)} margin), {human_bytes(space_free(volume, options.quota))} free",
    )


# The volume's file semantics, tried for real


@dataclass(frozen=True)
class Probe:
    name: str
    ok: bool
    detail: str


def _exclusive_create(work: Path) -> str | None:
    path = work / "lease"
    os.close(os.open(path, _CREATE, 0o644))
    try:
        os.close(os.open(path, _CREATE, 0o644))
    except FileExistsError:
        return None
    return "a second O_CREAT|O_EXCL open of an existing name succeeded"


def _link_create_only(work: Path) -> str | None:
    first, second, name = work / "first", work / "second", work / "object"
    first.write_bytes(b"first")
    second.write_bytes(b"second")
    os.link(first, name)
    try:
        os.link(second, name)
    except FileExistsError:
        return None if name.read_bytes() == b"first" else "link(2) failed but the name changed"
    return "link(2) onto an existing name succeeded"


def _flock_excludes(work: Path) -> str | None:
    path = work / "lock"
    path.touch()
    holder, other = os.open(path, os.O_RDWR), os.open(path, os.O_RDWR)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        return "a second open file took the exclusive flock the first one held (the lock is not enforced)"
    finally:
        os.close(other)
        os.close(holder)


def _rename_directory(work: Path) -> str | None:
    staging, final, taken = work / "staging", work / "final", work / "taken"
    staging.mkdir()
    (staging / "marker").write_text("complete\n")
    os.rename(staging, final)
    if staging.exists() or not (final / "marker").is_file():
        return "a directory renamed into a free name was not whole at its new name"
    taken.mkdir()
    (taken / "winner").write_text("first\n")
    try:
        os.rename(final, taken)
    except OSError as error:
        if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        return None if (taken / "winner").is_file() else "a refused rename still changed the target"
    return "rename(2) replaced a non-empty directory (a losing installer would clobber the winner)"


def _symlink(work: Path) -> str | None:
    link = work / "link"
    os.symlink("target/file", link)
    return None if os.readlink(link) == "target/file" else "a symlink read back a different target"


_PROBES: tuple[tuple[str, Callable[[Path], str | None]], ...] = (
    ("O_EXCL", _exclusive_create),
    ("link", _link_create_only),
    ("flock", _flock_excludes),
    ("rename", _rename_directory),
    ("symlink", _symlink),
)

# Who needs each behaviour: the fix says what breaks without it.
NEEDED_BY = {
    "scratch": "every check needs a directory it can create",
    "O_EXCL": "layer leases and the extractor create files with O_CREAT|O_EXCL",
    "link": "a file:// store on this filesystem writes create-only with link(2)",
    "flock": "a file:// store on this filesystem moves channels under flock",
    "rename": "boot installs each layer and release by renaming a complete directory into place",
    "symlink": "env layers and release views are made of symlinks",
}
_STORE_ONLY = {"link", "flock"}


def _run_probe(name: str, probe: Callable[[Path], str | None], scratch: Path) -> Probe:
    work = scratch / name.lower()
    try:
        work.mkdir()
        problem = probe(work)
    except OSError as error:
        problem = f"{error.strerror or error} ({errno.errorcode.get(error.errno or 0, '?')})"
    return Probe(name, problem is None, problem or "as POSIX says")


def probe_semantics(directory: Path) -> list[Probe]:
    """Try each behaviour in a fresh scratch directory under ``directory``; always remove it."""
    scratch = directory / f".podenv-doctor.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    try:
        scratch.mkdir()
    except OSError as error:
        return [Probe("scratch", False, f"cannot create {scratch}: {error.strerror or error}")]
    try:
        return [_run_probe(name, probe, scratch) for name, probe in _PROBES]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def judge_semantics(probes: list[Probe]) -> CheckResult:
    """PASS when every behaviour holds; else name each failure and who needs it."""
    bad = [probe for probe in probes if not probe.ok]
    if not bad:
        names = ", ".join(probe.name for probe in probes)
        return passed("semantics", f"{names} behave as POSIX says (tried in a scratch directory, removed)")
    what = "; ".join(f"{probe.name}: {probe.detail}" for probe in bad)
    needs = "; ".join(NEEDED_BY.get(probe.name, probe.name) for probe in bad)
    if {probe.name for probe in bad} <= _STORE_ONLY:
        fix = f"boot does not need these, but keep file:// stores off this filesystem ({needs})"
    else:
        fix = f"put PODENV_ROOT on a POSIX filesystem: the network volume or local disk ({needs})"
    return failed("semantics", what, fix)


def check_semantics(findings: _Findings) -> CheckResult:
    if not findings.volume_ok:
        return skipped("semantics", "the volume is not usable: nothing to try")
    return judge_semantics(probe_semantics(findings.options.root))


# The GPU driver


def check_driver(findings: _Findings) -> CheckResult:
    from podenv.gpu import check_driver as gpu_check_driver
    from podenv.gpu import driver_cuda_version

    found = findings.driver_cuda or driver_cuda_version()
    source = "assumed by --assume-driver-cuda" if findings.driver_cuda else "from NVML or nvidia-smi"
    driver = f"the driver supports CUDA {found} ({source})" if found else "no NVIDIA driver found"
    manifest = findings.manifest
    if manifest is None:
        return passed("driver", f"{driver}; no release resolved, so no CUDA requirement was checked")
    release = f"{manifest.name} {manifest.version}"
    if manifest.cuda is None:
        return passed("driver", f"{driver}; {release} needs no CUDA")
    if found is None:
        return failed(
            "driver",
            f"no NVIDIA driver found (NVML, nvidia-smi), but {release} needs CUDA {manifest.cuda}",
            "run on a GPU worker whose driver supports it (RunPod's CUDA version filter) "
            "and check that the container sees the GPU (NVIDIA_VISIBLE_DEVICES)",
        )
    try:
        gpu_check_driver(manifest.cuda, found, release)
    except PodenvError as error:
        return failed_with("driver", error, "pick GPUs whose driver supports the release's CUDA")
    return passed("driver", f"{driver}; {release} needs CUDA {manifest.cuda}")


# Where the env should go


def _local_figures(local_root: Path | None) -> "DiskFigures | None":
    from podenv.placement import measure

    if local_root is None:
        return None
    try:
        local_root.mkdir(parents=True, exist_ok=True)
        return measure(local_root)
    except OSError:
        return None


def check_placement(findings: _Findings) -> CheckResult:
    """Measure the volume and the local disk; say which placement they call for, and why."""
    from podenv.boot.space import SPACE_MARGIN
    from podenv.placement import measure, recommend

    if not findings.volume_ok:
        return skipped("placement", "the volume is not usable: nothing to measure")
    volume = measure(findings.options.root)
    local = _local_figures(findings.local_root)
    manifest = findings.manifest
    env_bytes = (
        sum(layer.unpacked_size for layer in manifest.layers if layer.kind == "env") if manifest else None
    )
    choice = recommend(volume, local, env_bytes, SPACE_MARGIN)
    detail = f"volume {volume.line()}; "
    detail += f"local disk {local.line()}" if local else f"local root {findings.local_root} not writable"
    return passed("placement", f"{detail}; recommends placement={choice.placement}: {choice.why}")


# Running them


CHECKS: tuple[Callable[[_Findings], CheckResult], ...] = (
    check_store,
    check_release,
    check_volume,
    check_space,
    check_semantics,
    check_driver,
    check_placement,
)


def _guarded(check: Callable[[_Findings], CheckResult], findings: _Findings) -> CheckResult:
    """A check that breaks is one failed line, not a traceback that hides the other checks."""
    try:
        return check(findings)
    except Exception as error:
        name = check.__name__.removeprefix("check_")
        return failed(name, f"the check itself broke ({type(error).__name__})", "report this as a podenv bug")


def run_checks(
    options: ReleaseOptions, driver_cuda: str | None = None, local_root: Path | None = None
) -> list[CheckResult]:
    """Every check, in order, of what `podenv boot` would do with ``options``."""
    findings = _Findings(options, driver_cuda, local_root=local_root)
    return [_guarded(check, findings) for check in CHECKS]


def _counts(results: list[CheckResult]) -> dict[str, int]:
    return {status: sum(result.status == status for result in results) for status in ("pass", "fail", "skip")}


def summary(results: list[CheckResult]) -> str:
    counts = _counts(results)
    line = f"doctor: {counts['pass']} passed, {counts['fail']} failed"
    return line + (f", {counts['skip']} skipped" if counts["skip"] else "")


def report(results: list[CheckResult]) -> int:
    """Log one line per check and the summary; the exit code is 1 if any check failed."""
    for result in results:
        _log.info(result.line, extra={"fields": {"doctor": result.to_json()}})
    counts = _counts(results)
    _log.info(summary(results), extra={"fields": {"doctor": counts}})
    return PodenvError.exit_code if counts["fail"] else 0
