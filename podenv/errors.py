"""Errors a user sees: each one is a single sentence that says what is wrong and what to do.

The command line prints ``str(error)`` and exits non-zero; nothing else is shown, so the
message must stand on its own and must never carry a credential.
"""


class PodenvError(Exception):
    """Base of every error podenv reports to a user as one sentence."""

    exit_code = 1


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


class BootError(PodenvError):
    """`podenv boot` cannot make the release ready: no store, no room, a lost wait, a bad exec."""

    exit_code = 11
