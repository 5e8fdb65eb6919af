"""Batches as Ray jobs: submit through the Jobs API (returns at once), then follow with status and logs."""
from __future__ import annotations

import json
import shlex
import tempfile
from pathlib import Path

from scanner.config import ScanConfig

from .errors import ClusterError

DEFAULT_ADDRESS = "http://127.0.0.1:8265"


def _client(address: str):
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ClusterError(f"cannot reach the Ray dashboard at {address}: {str(e).splitlines()[0][:200]}") from None


def entrypoint(models_name: str, catalog: str, config_name: str, options: list[str]) -> str:
    return " ".join(["superweights", "batch", shlex.quote(models_name), "--catalog", shlex.quote(catalog),
                     "--address", "auto", "--scan-config", shlex.quote(config_name), *map(shlex.quote, options)])


def submit(address: str, models_file: str | Path, catalog: str, scan: ScanConfig, options: list[str] | None = None,
           env: dict | None = None) -> str:
    """The models file and the whole scan configuration (texts of prompt and evaluation files included)
    travel with the job (its working_dir); the catalog must be reachable from the cluster (object storage or
    a shared folder). Returns the job id."""
    src = Path(models_file)
    client = _client(address)
    with tempfile.TemporaryDirectory(prefix="superweights-job-") as tmp:
        (Path(tmp) / "models.txt").write_text(src.read_text())
        (Path(tmp) / "scan-config.json").write_text(json.dumps(scan.to_dict(), indent=1))
        runtime_env = {"working_dir": tmp, **({"env_vars": env} if env else {})}
        try:
            return client.submit_job(entrypoint=entrypoint("models.txt", catalog, "scan-config.json", options or []),
                                     runtime_env=runtime_env,
                                     metadata={"superweights": "batch", "models_file": src.name})
        except RuntimeError as e:
            raise ClusterError(f"the Ray job server at {address} refused the job: {str(e).splitlines()[0][:200]}") \
                from None


def status(address: str, job_id: str) -> dict:
    client = _client(address)
    try:
        info = client.get_job_info(job_id)
    except RuntimeError as e:
        raise ClusterError(f"no job {job_id!r} at {address} ({str(e).splitlines()[0][:120]})") from None
    return {"job_id": job_id, "status": str(info.status.value if hasattr(info.status, "value") else info.status),
            "message": info.message, "entrypoint": info.entrypoint, "start_time": info.start_time,
            "end_time": info.end_time}


def logs(address: str, job_id: str, follow: bool = False, out=None) -> None:
    import asyncio
    import sys

    out = out or sys.stdout
    client = _client(address)
    try:
        if not follow:
            out.write(client.get_job_logs(job_id))
            return

        async def tail():
            async for chunk in client.tail_job_logs(job_id):
                out.write(chunk)
                out.flush()

        asyncio.run(tail())
    except RuntimeError as e:
        raise ClusterError(f"no logs for job {job_id!r} at {address} ({str(e).splitlines()[0][:120]})") from None
