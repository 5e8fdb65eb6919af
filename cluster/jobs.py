"""Batches as Ray jobs: submit through the Jobs API (returns at once), then follow with status and logs.

The job runs `superweights batch ... --progress-lines` on the head, which prints one `progress:` line per finished
model; `status` reports the last one while the job runs. A cluster with token authentication (Ray's default for a
cluster started on this machine since 2.5x) is reached with its token as Ray's own CLI does: for a head on this
machine, the token Ray keeps (`~/.ray/auth_token`, `RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH`) is used when
`RAY_AUTH_MODE` is not set; for any other address, `RAY_AUTH_MODE=token` says so. The token is never printed.
"""
from __future__ import annotations

import json
import os
import shlex
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

from scanner.config import ScanConfig

from .errors import ClusterError

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
PROGRESS = "progress: "  # how a batch's --progress-lines begin
NO_COMMAND = ("superweights: error: this Ray head cannot find the superweights command: start the head from the "
              "environment superweights is installed in (. .venv/bin/activate; ray start --head)")


def _auth_error(address: str) -> ClusterError:
    return ClusterError(f"the Ray cluster at {address} asks for its token: set RAY_AUTH_MODE=token and give the token "
                        "as RAY_AUTH_TOKEN or in the file ~/.ray/auth_token (or RAY_AUTH_TOKEN_PATH); a head started "
                        "on this machine wrote it there")


def _local(address: str) -> bool:
    return urlparse(address if "://" in address else f"http://{address}").hostname in ("127.0.0.1", "localhost", "::1")


def _client(address: str):
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    if _local(address) and "RAY_AUTH_MODE" not in os.environ:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available)

        import logging

        logging.getLogger(maybe_enable_token_auth_if_token_available.__module__).setLevel(logging.ERROR)
        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)  # what `ray` does for a local head
    try:
        return JobSubmissionClient(address)
    except AuthenticationError:
        raise _auth_error(address) from None
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ClusterError(f"cannot reach the Ray dashboard at {address}: {_first(e)}; is a head running there "
                           "(ray start --head)?") from None


def _first(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def entrypoint(models_name: str, catalog: str, config_name: str, options: list[str]) -> str:
    batch = " ".join(["superweights", "batch", shlex.quote(models_name), "--catalog", shlex.quote(catalog),
                      "--address", "auto", "--scan-config", shlex.quote(config_name), "--progress-lines",
                      *map(shlex.quote, options)])
    return f"command -v superweights >/dev/null || {{ echo {shlex.quote(NO_COMMAND)}; exit 127; }}; exec {batch}"


def submit(address: str, models_file: str | Path, catalog: str, scan: ScanConfig, options: list[str] | None = None,
           env: dict | None = None) -> str:
    """The models file and the whole scan configuration (texts of prompt and evaluation files included)
    travel with the job (its working_dir); the catalog must be reachable from the cluster (object storage or
    a shared folder). Returns the job id."""
    from ray.exceptions import AuthenticationError

    src = Path(models_file)
    client = _client(address)
    with tempfile.TemporaryDirectory(prefix="superweights-job-") as tmp:
        (Path(tmp) / "models.txt").write_text(src.read_text())
        (Path(tmp) / "scan-config.json").write_text(json.dumps(scan.to_dict(), indent=1))
        runtime_env = {"working_dir": tmp, **({"env_vars": env} if env else {})}
        for wait in (1, 2, 4, 8, 16, None):  # a head just started has no job agent for some seconds
            try:
                return client.submit_job(entrypoint=entrypoint("models.txt", catalog, "scan-config.json",
                                                               options or []),
                                         runtime_env=runtime_env,
                                         metadata={"superweights": "batch", "models_file": src.name})
            except AuthenticationError:
                raise _auth_error(address) from None
            except RuntimeError as e:
                if wait is None:
                    raise ClusterError(f"the Ray job server at {address} refused the job: {_first(e)}") from None
                time.sleep(wait)


def _call(address: str, job_id: str, what: str, fn):
    from ray.exceptions import AuthenticationError

    try:
        return fn(_client(address))
    except AuthenticationError:
        raise _auth_error(address) from None
    except (RuntimeError, ConnectionError) as e:
        raise ClusterError(f"no {what} for job {job_id!r} at {address} ({_first(e)[:120]})") from None


def status(address: str, job_id: str) -> dict:
    """The job's state, its last progress line (models done, failed, running) and, once it ended, how: the
    batch's one-line error or its summary."""
    info = _call(address, job_id, "job", lambda c: c.get_job_info(job_id))
    text = _call(address, job_id, "logs", lambda c: c.get_job_logs(job_id))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    progress = next((ln.removeprefix(PROGRESS) for ln in reversed(lines) if ln.startswith(PROGRESS)), None)
    state = str(info.status.value if hasattr(info.status, "value") else info.status)
    # how it ended, in the batch's words: its one-line error, else its summary (Ray's own lines come in any order)
    ended = next((ln for ln in reversed(lines) if ln.startswith("superweights: error")), None) or \
        next((ln for ln in reversed(lines) if ln.startswith(("batch finished", "superweights: "))), None)
    return {"job_id": job_id, "status": state, "progress": progress,
            "last_line": ended if state in ("FAILED", "STOPPED", "SUCCEEDED") else None,
            "entrypoint": info.entrypoint, "start_time": info.start_time, "end_time": info.end_time}


def logs(address: str, job_id: str, follow: bool = False, out=None) -> None:
    import asyncio
    import sys

    out = out or sys.stdout
    if not follow:
        out.write(_call(address, job_id, "logs", lambda c: c.get_job_logs(job_id)))
        return

    async def tail(client):
        async for chunk in client.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    _call(address, job_id, "logs", lambda c: asyncio.run(tail(c)))
