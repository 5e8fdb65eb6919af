"""The batch driver as a user runs it: killed half-way, then run again; interrupted by Ctrl-C."""
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from catalog import query
from catalog.store import Catalog

from .conftest import ARCHS12


def _env(cache):
    return {**os.environ, "SUPERWEIGHTS_CACHE": str(cache), "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}


def _ok(cat) -> list[str]:
    return [r[0] for r in query.run(cat, "SELECT model FROM scans_all WHERE status = 'ok'")[1]]


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the driver and everything it started (its in-process Ray included), nothing else."""
    tree = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(30)
    psutil.wait_procs([p for p in map(_proc, tree) if p], timeout=30)


def _proc(pid):
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def test_driver_killed_half_way_then_resumed(tmp_path, planted_cache):
    models = tmp_path / "models.txt"
    names = [f"planted:{a}" for a in ARCHS12[:6]]
    models.write_text("\n".join(names) + "\n")
    cat_dir = tmp_path / "catalog"
    cmd = [sys.executable, "-m", "cluster.cli", "batch", str(models), "--catalog", str(cat_dir), "-q", "--workers", "2",
           "--local"]
    proc = subprocess.Popen(cmd, env=_env(planted_cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    cat = Catalog(cat_dir)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if len(_ok(cat)) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the batch ended before it could be killed"
    _kill_tree(proc)
    before = _ok(cat)
    assert 2 <= len(before) < len(names)

    again = subprocess.run(cmd, env=_env(planted_cache), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"{len(names) - len(before)} scanned, {len(before)} skipped" in again.stdout
    after = _ok(cat)
    assert sorted(after) == sorted(names)  # every model once: none lost, none scanned twice


def _ctrl_c_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@pytest.mark.parametrize("dispatch", [[], ["--local"]], ids=["ray", "local"])
def test_ctrl_c_says_how_many_scans_were_saved(tmp_path, planted_cache, dispatch):
    """Ctrl-C (SIGINT to the driver and its workers) mid-batch: one line with the scans saved, exit 130, and the
    catalog holds exactly those, and no worker outlives the driver; the same command then goes on."""
    models = tmp_path / "models.txt"
    names = [f"planted:{a}" for a in ARCHS12[:5]]
    models.write_text("\n".join(names) + "\n")
    cat_dir = tmp_path / "catalog"
    cmd = [sys.executable, "-m", "cluster.cli", "batch", str(models), "--catalog", str(cat_dir), "--progress-lines",
           "--workers", "1", *dispatch]
    # started as a terminal starts a command, with Ctrl-C's default action: a command inherits an ignored SIGINT
    # (a background job of a non-interactive shell, as CI may run these tests, ignores it), and Python then
    # never raises KeyboardInterrupt
    proc = subprocess.Popen(cmd, env=_env(planted_cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_ctrl_c_default)
    for line in proc.stdout:  # the progress lines come as each model finishes
        if line.startswith("progress: 1/"):
            break
    assert proc.poll() is None, "the batch ended before it could be interrupted"
    workers = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C does: the whole foreground group
    out, err = proc.communicate(timeout=120)
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, [p.cmdline() for p in alive]
    assert proc.returncode == 130, err
    [line] = [ln for ln in err.splitlines() if ln.startswith("superweights:")]
    saved = len(_ok(Catalog(cat_dir)))
    assert 1 <= saved < len(names)
    assert line.startswith("superweights: error: interrupted after") and f"{saved} scan(s) saved to" in line, err
    assert "Traceback" not in err and "run the same command again" in line
    again = subprocess.run(cmd, env=_env(planted_cache), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and f"{len(names) - saved} scanned, {saved} skipped" in again.stdout, again.stderr
