"""Errors a user sees, and the one table of podenv's exit codes.

Each error says what is wrong (``what``) and, where there is one, what to do (``fix``): the
command line prints ``what; fix`` as one sentence, and `podenv doctor` prints the two as
its line's detail and fix. Nothing else is shown, so the message must stand on its own and
must never carry a credential.

Every exit code podenv returns is in `EXIT_CODES` (the README's table is
`exit_code_table()`; a test keeps them equal). A new kind of error takes the next code here.
"""

import errno
import re
from dataclasses import dataclass

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def one_line(text: str) -> str:
    """``text`` with control characters escaped: a value read from a store, a volume or a
    command line (a name with a newline) cannot split a message or forge a log line."""
    return _CONTROL.sub(lambda match: repr(match.group())[1:-1], text)


class PodenvError(Exception):
    """Base of every error podenv reports to a user as one sentence."""

    exit_code = 1

    def __init__(self, what: str, fix: str | None = None) -> None:
        self.what = one_line(what)
        self.fix = None if fix is None else one_line(fix)
        super().__init__(self.what if self.fix is None else f"{self.what}; {self.fix}")


class StoreError(PodenvError):
    """The store could not be reached, or refused us (credentials, permissions)."""

    exit_code = 3


class NotFoundError(PodenvError):
    """A blob, release or channel that was asked for does not exist."""

    exit_code = 4


class AlreadyExistsError(PodenvError):
    """An immutable object exists already and will not be overwritten."""

    exit_code = 5


class ConflictError(PodenvError):
    """A compare-and-swap lost: somebody else changed the object first."""

    exit_code = 6


class IntegrityError(PodenvError):
    """Bytes do not match the digest they were promised to have."""

    exit_code = 7


class UnsafeArchiveError(PodenvError):
    """An archive member would land outside its directory or is a device, fifo or duplicate."""

    exit_code = 8


class ManifestError(PodenvError):
    """A release manifest fails its schema."""

    exit_code = 9


class DriverTooOldError(PodenvError):
    """The GPU driver is older than the CUDA the release needs."""

    exit_code = 10


class BootError(PodenvError):
    """`podenv boot` cannot make the release ready: no store, no room, a lost wait, a bad exec."""

    exit_code = 11


class DeployError(PodenvError):
    """`podenv deploy` cannot bring RunPod to the deploy file: a bad file or image, or RunPod refused."""

    exit_code = 12


_FULL = (errno.ENOSPC, errno.EDQUOT)
_DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)


def from_os_error(error: OSError, doing: str, kind: type[PodenvError] | None = None) -> PodenvError:
    """The one sentence, as a ``kind`` error, for an OS error met while ``doing`` something
    (e.g. "boot of demo"): every command ends an OS error here instead of in a traceback."""
    where = f" ({error.filename})" if error.filename else ""
    reason = error.strerror or type(error).__name__
    kind = kind or PodenvError
    if error.errno in _FULL:
        return kind(
            f"{doing} failed: the disk is full{where}", fix="free space (`podenv gc`) or grow the volume."
        )
    if error.errno in _DENIED:
        return kind(f"{doing} failed: {reason}{where}", fix="give podenv a writable PODENV_ROOT.")
    return kind(f"{doing} failed: {reason}{where}")


@dataclass(frozen=True)
class ExitCode:
    code: int
    meaning: str


# Codes no error class carries: success, argparse's usage errors, an interrupt.
_OTHER_CODES = (
    ExitCode(0, "success (`podenv doctor`: every check passed)"),
    ExitCode(2, "the command line is wrong (argparse's usage error)"),
    ExitCode(130, "interrupted (Ctrl-C)"),
)
ERRORS: tuple[type[PodenvError], ...] = (
    PodenvError,
    StoreError,
    NotFoundError,
    AlreadyExistsError,
    ConflictError,
    IntegrityError,
    UnsafeArchiveError,
    ManifestError,
    DriverTooOldError,
    BootError,
    DeployError,
)


def _meaning(error: type[PodenvError]) -> str:
    summary = (error.__doc__ or "").strip().splitlines()[0].rstrip(".")
    if error is PodenvError:
        return "any other error (`podenv doctor`: a check failed)"
    return f"{error.__name__}: {summary[0].lower()}{summary[1:]}"


EXIT_CODES: tuple[ExitCode, ...] = tuple(
    sorted(
        _OTHER_CODES + tuple(ExitCode(error.exit_code, _meaning(error)) for error in ERRORS),
        key=lambda e: e.code,
    )
)


def exit_code_table() -> str:
    """The README's table of exit codes."""
    rows = ["| exit code | meaning |", "| --- | --- |"]
    rows += [f"| {entry.code} | {entry.meaning} |" for entry in EXIT_CODES]
    return "\n".join(rows) + "\n"
