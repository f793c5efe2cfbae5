"""Reading pixi.lock: what exactly an environment installs on one platform.

py-rattler (pixi's own engine) parses the lock, so every lock version pixi writes today
(5, 6 and 7) reads the same way. Nothing here touches the network.
"""

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from podenv.errors import PodenvError

_VERSION_LINE = re.compile(r"^version:\s*(\d+)\s*$", re.MULTILINE)
_CUDA_LOWER_BOUND = re.compile(r"__cuda\s*(?:>=|==|=)?\s*([0-9]+(?:\.[0-9]+)*)")
_SDIST_SUFFIXES = (".tar.gz", ".zip", ".tar.bz2", ".tgz")


class LockError(PodenvError):
    """The lock is missing, unreadable, or lacks what was asked of it."""


@dataclass(frozen=True)
class CondaPackage:
    name: str
    version: str
    build: str
    subdir: str
    url: str
    sha256: str | None
    md5: str | None
    size: int | None


@dataclass(frozen=True)
class PypiPackage:
    name: str
    version: str
    location: str
    sha256: str | None

    @property
    def kind(self) -> str:
        """'wheel', 'sdist' (built at install: not reproducible), or 'path' (a local source)."""
        if "://" not in self.location:
            return "path"
        if self.location.lower().endswith(".whl"):
            return "wheel"
        return "sdist" if self.location.lower().endswith(_SDIST_SUFFIXES) else "other"


@dataclass(frozen=True)
class InstallPlan:
    lock_path: str
    lock_version: int | None
    environment: str
    platform: str
    channels: list[str]
    virtual_packages: list[str]
    cuda: str | None
    conda: list[CondaPackage] = field(default_factory=list)
    pypi: list[PypiPackage] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        for package, entry in zip(self.pypi, document["pypi"], strict=True):
            entry["kind"] = package.kind
        return document


def lock_version(text: str) -> int | None:
    match = _VERSION_LINE.search(text)
    return int(match.group(1)) if match else None


def _load(lock_path: Path) -> Any:
    try:
        from rattler import LockFile
    except ImportError:
        raise LockError(
            "reading a lock needs py-rattler: install podenv with its build extra, podenv[build]."
        ) from None

    if not lock_path.is_file():
        raise LockError(
            f"{lock_path} does not exist: run `pixi lock` where pixi.toml is, and commit the lock."
        )
    try:
        return LockFile.from_path(lock_path)
    except Exception as error:  # rattler raises its own exception types per parse failure
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise LockError(f"{lock_path} is not a pixi lock file podenv can read ({first_line}).") from None


def _environment(lock: Any, lock_path: Path, name: str) -> Any:
    environment = lock.environment(name)
    if environment is None:
        names = ", ".join(sorted(env_name for env_name, _ in lock.environments())) or "none"
        raise LockError(
            f"{lock_path} has no environment '{name}' (it has: {names}); "
            "define it in pixi.toml and run `pixi lock`."
        )
    return environment


def _platform(environment: Any, lock_path: Path, env_name: str, platform: str) -> Any:
    for candidate in environment.platforms():
        if candidate.name == platform:
            return candidate
    names = ", ".join(sorted(p.name for p in environment.platforms())) or "none"
    raise LockError(
        f"environment '{env_name}' in {lock_path} has no packages for {platform} (it has: {names}); "
        "add the platform to pixi.toml and run `pixi lock`."
    )


def _hex(value: bytes | None) -> str | None:
    return value.hex() if value else None


def _pypi_sha256(package: Any) -> str | None:
    try:
        return _hex(package.hashes.sha256)
    except AttributeError:  # rattler's hashes object wraps nothing when the lock has no hash
        return None


def cuda_requirement(virtual_packages: list[str], dependency_specs: list[str]) -> str | None:
    """The highest CUDA lower bound asked for by the platform or by any package, or None."""
    found = [
        match.group(1)
        for spec in [*virtual_packages, *dependency_specs]
        if (match := _CUDA_LOWER_BOUND.search(spec))
    ]
    if not found:
        return None
    return max(found, key=lambda version: tuple(int(part) for part in version.split(".")))


def read_plan(lock_path: Path, environment: str, platform: str) -> InstallPlan:
    """Everything ``environment`` installs on ``platform``, as the lock pins it."""
    lock = _load(lock_path)
    locked_environment = _environment(lock, lock_path, environment)
    locked_platform = _platform(locked_environment, lock_path, environment, platform)
    conda, pypi, specs = [], [], []
    for package in locked_environment.packages(locked_platform) or []:
        if hasattr(package, "repo_data_record"):
            record = package.repo_data_record()
            specs.extend([*record.depends, *record.constrains])
            conda.append(
                CondaPackage(
                    name=record.name.normalized,
                    version=str(record.version),
                    build=str(record.build),
                    subdir=record.subdir,
                    url=record.url,
                    sha256=_hex(record.sha256),
                    md5=_hex(record.md5),
                    size=record.size,
                )
            )
        else:
            pypi.append(
                PypiPackage(package.name, str(package.version), str(package.location), _pypi_sha256(package))
            )
    virtual = [str(v) for v in locked_platform.virtual_packages]
    return InstallPlan(
        lock_path=str(lock_path),
        lock_version=lock_version(lock_path.read_text(errors="replace")[:4096]),
        environment=environment,
        platform=platform,
        channels=[str(channel) for channel in locked_environment.channels()],
        virtual_packages=virtual,
        cuda=cuda_requirement(virtual, specs),
        conda=sorted(conda, key=lambda p: p.name),
        pypi=sorted(pypi, key=lambda p: p.name),
    )


def conda_records(lock_path: Path, environment: str, platform: str) -> list[Any]:
    """The rattler RepoDataRecords to install, for ``rattler.install``."""
    lock = _load(lock_path)
    locked_environment = _environment(lock, lock_path, environment)
    locked_platform = _platform(locked_environment, lock_path, environment, platform)
    return list(locked_environment.conda_repodata_records_for_platform(locked_platform) or [])
