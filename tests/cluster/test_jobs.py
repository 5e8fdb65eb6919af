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
def head(planted_cache, tmp_path_factory):
    """A head on 127.0.0.1 started as the README's recipe says: from the environment superweights is installed in
    (its bin first on PATH, as `. .venv/bin/activate` does), RAY_AUTH_MODE unset, in a home where a local Ray
    (`make scan`'s batch) left a token, so that Ray turns token authentication on. Its own temp dir; only its
    processes are stopped afterwards."""
    tmp = tempfile.mkdtemp(prefix="swray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    home = tmp_path_factory.mktemp("home")
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text("a" * 32)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update({"HOME": str(home), "HF_HUB_OFFLINE": "1", "SUPERWEIGHTS_CACHE": str(planted_cache),
                "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0"})
    port, dash = _port(), _port()
    cmd = [str(VENV_BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=2", "--num-gpus=1",
           f"--dashboard-agent-listen-port={_port()}", f"--temp-dir={tmp}", "--disable-usage-stats"]
    started = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, timeout=180)
    assert "Token authentication is enabled" in started.stderr + started.stdout  # the case that crashed `submit`
    try:
        yield {"address": f"http://127.0.0.1:{dash}", "env": env, "home": home}
    finally:
        mine = [p for p in psutil.process_iter(["cmdline"]) if tmp in " ".join(p.info["cmdline"] or [])]
        for p in mine:
            try:
                p.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(mine, timeout=5)  # then killed: some of them wait out a grace period
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass


def _cli(head, *args, timeout=120, env=None):
    return subprocess.run([sys.executable, "-m", "cluster.cli", *args], env={**head["env"], **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def test_submit_status_logs(head, tmp_path):
    """The README's recipe, with the token the head uses found as Ray's own CLI finds it; progress in `logs`
    and `status` while the job runs, and how many scans were saved when it ends."""
    models = tmp_path / "models.txt"
    archs = ["llama", "gpt2", "qwen2", "mixtral", "mistral", "olmo"]
    models.write_text("".join(f"planted:{a}\n" for a in archs))  # one at a time: seconds each
    cat_dir = tmp_path / "catalog"
    sub = _cli(head, "submit", str(models), "--address", head["address"], "--catalog", str(cat_dir),
               "--workers", "1")
    assert sub.returncode == 0, sub.stderr
    job = sub.stdout.strip().splitlines()[-1]
    assert job and head["env"]["HOME"] not in sub.stderr and "a" * 32 not in sub.stdout + sub.stderr
    deadline, state, seen = time.time() + 300, None, []
    while time.time() < deadline:
        st = _cli(head, "status", job, "--address", head["address"], "--json")
        assert st.returncode == 0, st.stderr
        info = json.loads(st.stdout)
        state = info["status"]
        if state == "RUNNING" and info["progress"]:
            seen.append(info["progress"])
        if state in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        time.sleep(0.5)
    logs = _cli(head, "logs", job, "--address", head["address"])
    assert state == "SUCCEEDED", logs.stdout[-2000:]
    assert any(p.startswith(tuple(f"{k}/6 done" for k in range(1, 6))) for p in seen), seen  # before the end
    assert "progress: 6/6 done (6 scanned, 0 failed, 0 compared)" in logs.stdout
    assert "batch finished" in logs.stdout and "6 scan(s) saved to" in logs.stdout
    ok = query.run(Catalog(cat_dir), "SELECT model FROM scans WHERE status = 'ok' ORDER BY model")[1]
    assert ok == [(f"planted:{a}",) for a in sorted(archs)]
    plain = _cli(head, "status", job, "--address", head["address"])
    assert plain.stdout.startswith(f"{job}: SUCCEEDED, 6/6 done") and "saved to" in plain.stdout


def test_a_head_that_asks_for_a_token_the_client_lacks_is_one_line(head, tmp_path):
    """The crash of the issue (a traceback naming RAY_AUTH_MODE) is now one line saying what to set."""
    stranger = {"HOME": str(tmp_path)}  # no token here
    assert_clean_error(_cli(head, "status", "raysubmit_x", "--address", head["address"], env=stranger),
                       "asks for its token", "RAY_AUTH_MODE=token")
    models = tmp_path / "models.txt"
    models.write_text("planted:llama\n")
    assert_clean_error(_cli(head, "submit", str(models), "--address", head["address"], "--catalog",
                            (tmp_path / "c").as_uri(), env=stranger), "asks for its token")


def test_a_head_without_superweights_says_so(head, tmp_path):
    """A head started outside the environment (the job's shell cannot find `superweights`): the job fails with
    one line saying how to start the head, which `status` shows."""
    code = ("import sys; from cluster import jobs; from scanner.config import ScanConfig; "
            "print(jobs.submit(sys.argv[1], sys.argv[2], sys.argv[3], ScanConfig(), env={'PATH': '/usr/bin:/bin'}))")
    models = tmp_path / "models.txt"
    models.write_text("planted:llama\n")
    sub = subprocess.run([sys.executable, "-c", code, head["address"], str(models), str(tmp_path / "c")],
                         env=head["env"], capture_output=True, text=True, timeout=120)
    assert sub.returncode == 0, sub.stderr
    job = sub.stdout.strip().splitlines()[-1]
    deadline = time.time() + 120
    while time.time() < deadline:
        st = _cli(head, "status", job, "--address", head["address"])
        if "FAILED" in st.stdout:
            break
        time.sleep(0.5)
    assert st.stdout.splitlines()[-1].startswith("superweights: error: this Ray head cannot find the superweights "
                                                 "command"), st.stdout


def test_unknown_job_and_unreachable_head(head):
    assert_clean_error(_cli(head, "status", "raysubmit_nope", "--address", head["address"]), "no job")
    assert_clean_error(_cli(head, "logs", "raysubmit_nope", "--address", head["address"]), "raysubmit_nope")
    assert_clean_error(_cli(head, "status", "x", "--address", f"http://127.0.0.1:{_port()}"), "cannot reach")
