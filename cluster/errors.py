"""Named cluster exceptions; `cluster.cli.main` turns them into one-line errors."""
from scanner.errors import ScanError


class ClusterError(Exception):
    """Ray cannot be reached, or a job does not exist. `str(err)` is a complete one-line message."""

    exit_code = 1


class BadOption(ClusterError):
    """A batch option or a models file line has a value it cannot take."""

    exit_code = 2


class ClusterTooSmall(ClusterError):
    """The cluster cannot hold even one scan actor with the resources it asks for."""


class NotInCatalog(ClusterError):
    """The catalog holds no scan that can answer (e.g. no validated scan of the model asked about)."""

    exit_code = 2


class BatchInterrupted(ClusterError):
    """Ctrl-C during a batch: says how many scans were saved (all that finished) and how to go on."""

    exit_code = 130


class InternalError(ScanError):
    """A fault of this program (not of the model or the input), kept as a failed row so a batch goes on."""


class WorkerDied(ClusterError):
    """A worker process ended in the middle of a call (killed, out of memory): the batch retries elsewhere."""
