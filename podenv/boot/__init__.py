"""`podenv boot`: make a release ready on the volume, then exec the worker in it.

Warm path: the release's view and every layer's marker are on the volume; nothing is read
from the store (it need not even be reachable for a pinned release), and the process
execs at once. Nothing heavy is imported at the top of these modules for that reason.

Cold path: check the space; take each missing layer's lease (or wait for its holder); bring
every blob of those layers (the shards of a sharded env, the tar.zst of an old-format layer)
through one pool of processes: from the volume's blob cache or the store (ranged GETs),
through sha256, zstd and the safe extractor into private staging; then per layer make the
index's links, relocate the env to its final path, write the marker, rename into place. A
worker that loses a race throws its staging away.

One module per concern: `options` (what to boot), `warm` (what the volume has), `install`
(one layer), `space`, `views` (the release directory), `prepare` (the whole boot), `report`
and `execute` (the worker's environment and the exec). Which release to boot is
`podenv.resolve`'s answer, shared with `podenv doctor`.
"""

from podenv.boot.execute import STORE_CREDENTIALS, TELEMETRY_OFF, exec_into, worker_environment
from podenv.boot.install import install_missing
from podenv.boot.options import BootOptions
from podenv.boot.prepare import prepare
from podenv.boot.report import BootReport, ReadyRelease, summary_line, write_report
from podenv.boot.space import SPACE_MARGIN, check_space, space_free, space_needed
from podenv.errors import BootError

__all__ = [
    "SPACE_MARGIN",
    "STORE_CREDENTIALS",
    "TELEMETRY_OFF",
    "BootError",
    "BootOptions",
    "BootReport",
    "ReadyRelease",
    "check_space",
    "exec_into",
    "install_missing",
    "prepare",
    "space_free",
    "space_needed",
    "summary_line",
    "worker_environment",
    "write_report",
]
