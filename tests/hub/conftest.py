"""A Hugging Face server on loopback: olah (a self-hosted hub mirror) serving git repositories the tests make,
in offline mode, to huggingface_hub through HF_ENDPOINT. The code under test talks to it exactly as to the hub:
model_info for pins, snapshot_download for files."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
GIT = ["git", "-c", "user.email=tests@superweights", "-c", "user.name=tests", "-c", "init.defaultBranch=main"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Hub:
    root: Path
    port: int
    proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def repo(self, repo_id: str) -> Path:
        return self.root / "mirrors" / "models" / repo_id

    def commit(self, repo_id: str, files: dict[str, bytes | str] | Path, message: str = "update") -> str:
        """Files (a folder to copy, or names -> contents) committed to the repo's main; its new sha."""
        repo = self.repo(repo_id)
        if not (repo / ".git").exists():
            repo.mkdir(parents=True, exist_ok=True)
            subprocess.run([*GIT, "init", "-q", str(repo)], check=True)
        if isinstance(files, Path):
            shutil.copytree(files, repo, dirs_exist_ok=True)
        else:
            for name, data in files.items():
                (repo / name).write_bytes(data.encode() if isinstance(data, str) else data)
        subprocess.run([*GIT, "-C", str(repo), "add", "-A"], check=True)
        subprocess.run([*GIT, "-C", str(repo), "commit", "-q", "-m", message], check=True)
        return subprocess.run([*GIT, "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True,
                              text=True).stdout.strip()

    def tag(self, repo_id: str, name: str, sha: str) -> None:
        subprocess.run([*GIT, "-C", str(self.repo(repo_id)), "tag", name, sha], check=True)

    def start(self) -> None:
        (self.root / "olah.toml").write_text(f"""
[basic]
host = "127.0.0.1"
port = {self.port}
mirror-netloc = "127.0.0.1:{self.port}"
mirror-lfs-netloc = "127.0.0.1:{self.port}"
repos-path = "{self.root / 'repos'}"
mirrors-path = ["{self.root / 'mirrors'}"]
metadata-cache-ttl = 0

[accessibility]
offline = true

[[accessibility.proxy]]
repo = "*/*"
allow = true
""")
        self.proc = subprocess.Popen([str(BIN / "olah-cli"), "-c", str(self.root / "olah.toml")], cwd=self.root,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{self.endpoint}/api/models/none/none/revision/main", timeout=2)
            except urllib.error.HTTPError:
                return  # it answers (401: no such repository)
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("olah did not start")

    def stop(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)
            self.proc = None

    def env(self, home: Path) -> dict:
        """What a user's shell holds to use this server: HF_ENDPOINT, a cache of their own, online."""
        return {"HF_ENDPOINT": self.endpoint, "HF_HOME": str(home), "HF_HUB_OFFLINE": "0",
                "HF_HUB_DISABLE_TELEMETRY": "1", "RAY_AUTH_MODE": "disabled"}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    server = Hub(tmp_path_factory.mktemp("hub"), _port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
