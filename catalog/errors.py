"""Named catalog exceptions; the command (`cluster.cli.main`) turns them into one-line errors."""


class CatalogError(Exception):
    """A catalog failure the user can act on. `str(err)` is a complete one-line message."""

    exit_code = 1


class CatalogUnavailable(CatalogError):
    """The catalog location cannot be opened or written."""


class UnreadableLog(CatalogUnavailable):
    """A table's log delta-rs cannot read (readers fall back to its newest readable state)."""


class QueryError(CatalogError):
    """The SQL is invalid, refers to something that does not exist, or would write."""

    exit_code = 2


class BadReference(CatalogError):
    """A reference file is missing columns or holds values that are not coordinates."""

    exit_code = 2


class PublishError(CatalogError):
    """The index could not be written or uploaded."""


class BadOption(CatalogError):
    """A catalog command's option has a value it cannot take."""

    exit_code = 2


class UnsafeCompaction(CatalogError):
    """A compaction that could delete files a writer or a reader is about to need."""

    exit_code = 2
