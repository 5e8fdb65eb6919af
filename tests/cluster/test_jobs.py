"""submit / status / logs against a Ray head started with `ray start --head` on loopback."""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from catalog import query
from catalog.store import Catalog

from .test_cli import assert_clean_error

VENV_BIN = Path(sys.executable).parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head(planted_cache):
    """A head on 127.0.0.1 with its own temp dir; only its processes are stopped afterwards."""
    tmp = tempfile.mkdtemp(prefix="swray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1",
           "SUPERWEIGHTS_CACHE": str(planted_cache), "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
           "RAY_USAGE_STATS_ENABLED": "0"}
    port, dash = _port(), _port()
    cmd = [str(VENV_BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=2", "--num-gpus=1",
           f"--temp-dir={tmp}", "--disable-usage-stats"]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=180)
    try:
        yield {"address": f"http://127.0.0.1:{dash}", "env": env}
    finally:
        mine = [p for p in psutil.process_iter(["cmdline"]) if tmp in " ".join(p.info["cmdline"] or [])]
        for p in mine:
            try:
                p.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(mine, timeout=20)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass


def _cli(head, *args, timeout=120):
    return subprocess.run([sys.executable, "-m", "cluster.cli", *args], env=head["env"], capture_output=True,
                          text=True, timeout=timeout)


def test_submit_status_logs(head, tmp_path):
    models = tmp_path / "models.txt"
    models.write_text("planted:llama\nplanted:gpt2\n")
    cat_dir = tmp_path / "catalog"
    sub = _cli(head, "submit", str(models), "--address", head["address"], "--catalog", str(cat_dir))
    assert sub.returncode == 0, sub.stderr
    job = sub.stdout.strip().splitlines()[-1]
    assert job
    deadline, state = time.time() + 300, None
    while time.time() < deadline:
        st = _cli(head, "status", job, "--address", head["address"], "--json")
        assert st.returncode == 0, st.stderr
        state = json.loads(st.stdout)["status"]
        if state in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        time.sleep(1)
    logs = _cli(head, "logs", job, "--address", head["address"])
    assert state == "SUCCEEDED", logs.stdout[-2000:]
    assert "batch finished" in logs.stdout and "2 scanned" in logs.stdout
    ok = query.run(Catalog(cat_dir), "SELECT model FROM scans WHERE status = 'ok' ORDER BY model")[1]
    assert ok == [("planted:gpt2",), ("planted:llama",)]
    plain = _cli(head, "status", job, "--address", head["address"])
    assert plain.stdout.startswith(f"{job}: SUCCEEDED")


def test_unknown_job_and_unreachable_head(head):
    assert_clean_error(_cli(head, "status", "raysubmit_nope", "--address", head["address"]), "no job")
    assert_clean_error(_cli(head, "logs", "raysubmit_nope", "--address", head["address"]), "raysubmit_nope")
    assert_clean_error(_cli(head, "status", "x", "--address", f"http://127.0.0.1:{_port()}"), "cannot reach")
