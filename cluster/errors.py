"""Named cluster exceptions; the CLI turns them into one-line errors."""


class ClusterError(Exception):
    """Ray cannot be reached, or a job does not exist. `str(err)` is a complete one-line message."""

    exit_code = 1
