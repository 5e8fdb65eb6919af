"""Named exceptions of the scanner. The library raises these; the command (`cluster.cli.main`) turns them into
one-line errors and exit codes."""


class ScanError(Exception):
    """A failure the user can act on. `str(err)` is a complete one-line message."""

    exit_code = 1


class ModelNotFound(ScanError):
    """The path does not exist, or the hub has no such repository or revision."""


class NotAModel(ScanError):
    """The path exists but holds no loadable causal language model."""


class CorruptCheckpoint(ScanError):
    """Weight files are truncated, unreadable or inconsistent."""


class UnsupportedArchitecture(ScanError):
    """The model's architecture has no entry in the adapter table."""


class HubUnavailable(ScanError):
    """The hub cannot be reached (offline) and the model is not in the local cache."""


class UnsafeCheckpoint(ScanError):
    """The checkpoint needs code execution or unpickling that was not allowed."""


class BadInput(ScanError):
    """An option or input file is invalid."""

    exit_code = 2


class CannotStream(NotAModel):
    """The checkpoint cannot be read layer by layer (fused experts, GGUF tensors converted together); loading
    it whole, or offloaded by accelerate, still may work."""


class ModelChanged(ScanError):
    """The model's files are not the ones that were pinned (edited or replaced since)."""


class OutOfRange(ScanError):
    """A coordinate (from another model, or typed) does not exist in this model: another shape, or no such
    layer or expert."""
