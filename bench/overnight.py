"""How many models fit in a night: the stages measured here, and a night projected from them.

    .venv/bin/python bench/overnight.py                                   # measure, then the moonshot night
    .venv/bin/python bench/overnight.py --mix 1000x7e9 --workers 8 --link-gbps 10

Measured here (printed as such): (1) the download rate from a Hugging Face server on loopback (olah,
tests/fixtures/hub_server.py) for a 256 MB repository: what the hub protocol and the cache cost on this
machine, an upper bound for a real link; (2) a scan's stages per parameter (load, detection with triage,
validation) of a real model's scan (SmolLM2-135M, shipped), from the scan's own timings, on this CPU; (3) a batch of 20 hub
models whose sum exceeds its --cache-limit, fetched ahead and not: the time the overlap hides, and the most
the batch held.
Assumed (printed beside, each a flag): the link bandwidth, the accelerator's speed over this CPU, and the
sizes of the models in the night (`--mix COUNTxPARAMS,...`).
Projection: each worker scans back to back; fetched ahead, a model's download overlaps the scan before it,
so a model costs max(download, scan) after the first; the night's models are dealt to the workers largest
first (a greedy schedule).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def download_rate(root: Path, mb: int) -> float:
    """MB/s of snapshot_download from the loopback server, for one file of `mb` MB."""
    from tests.fixtures.hub_server import Hub, free_port

    hub = Hub(root / "hub", free_port())
    hub.commit("bench/blob", {"blob.safetensors": os.urandom(mb << 20), "config.json": "{}"}, "bytes")
    hub.start()
    try:
        code = ("import time,sys; from huggingface_hub import snapshot_download; t=time.time(); "
                "snapshot_download('bench/blob', revision='main'); print(time.time()-t)")
        import subprocess

        env = {**os.environ, **hub.env(root / "hf")}
        took = float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                    check=True).stdout.strip().splitlines()[-1])
    finally:
        hub.stop()
    return mb / took


def stage_rates(model: str) -> dict:
    """Seconds per billion parameters of each stage of a real model's scan (default configuration), from the
    scan's own timings; scaling them by parameters is an assumption the projection prints."""
    from scanner.config import ScanConfig
    from scanner.load.sources import resolve
    from scanner.scan import scan_source

    started = time.time()
    result = scan_source(resolve(model), ScanConfig(), started)
    t, n = result.timings, result.info["num_parameters"]
    stages = {"load": t["total_s"] - t["detect_s"] - t["triage_s"] - t["validate_s"],
              "detect": t["detect_s"] + t["triage_s"], "validate": t["validate_s"]}
    print(f"  {model} ({n / 1e6:.0f} M parameters), whole scan {t['total_s']:.1f} s: "
          + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items()))
    return {k: v / n * 1e9 for k, v in stages.items()}


def overlap(root: Path, n: int, workers: int) -> tuple[float, float, int, int]:
    """A batch of `n` hub models (planted Llamas of 28 MB) under a cache limit of a third of their sum, fetched
    ahead and not: (seconds with, seconds without, the most bytes the batch held, the limit)."""
    import subprocess

    from scanner.planted import Plant, build
    from tests.fixtures.hub_server import Hub, free_port

    folder = build("llama", root / "night", [Plant(1, 10, 20, None)], max_shard_size="200MB",
                   config=dict(hidden_size=256, intermediate_size=768, num_hidden_layers=8, num_attention_heads=8,
                               num_key_value_heads=8, max_position_embeddings=2048))
    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    hub = Hub(root / "night-hub", free_port())
    names = [f"night/m{i}" for i in range(n)]
    for name in names:
        hub.commit(name, folder, "weights")
    (root / "night.txt").write_text("\n".join(names) + "\n")
    limit = max(n * size // 3, 3 * size)
    hub.start()
    took, held = [], 0
    try:
        for flag in ([], ["--no-fetch-ahead"]):
            env = {**os.environ, **hub.env(root / f"hf{len(took)}"), "PYTHONPATH": str(ROOT)}
            t = time.time()
            out = subprocess.run([sys.executable, "-m", "cluster.cli", "batch", str(root / "night.txt"), "--catalog",
                                  str(root / f"cat{len(took)}"), "--workers", str(workers), "--progress-lines",
                                  "--cache-limit", str(limit), "--no-validate", *flag], env=env, capture_output=True,
                                 text=True, check=True).stdout
            took.append(time.time() - t)
            held = max([held] + [float(ln.split("at most ")[1].split(" MB")[0]) * 1e6 for ln in out.splitlines()
                                 if "at most " in ln])
    finally:
        hub.stop()
    return took[0], took[1], int(held), limit


def project(mix: list[tuple[int, float]], per_b: dict, speedup: float, link_gbps: float, workers: int) -> float:
    """Hours for the night: (count, params) models on `workers`, bf16 weights (2 bytes a parameter)."""
    models = sorted((p for n, p in mix for _ in range(n)), reverse=True)
    free = [0.0] * workers
    for p in models:
        scan = sum(per_b.values()) * p / 1e9 / speedup
        download = 2 * p * 8 / (link_gbps * 1e9)
        i = free.index(min(free))
        free[i] += max(scan, download) if free[i] else scan + download
    return max(free) / 3600


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mix", default="400x1.5e9,350x7.5e9,150x14e9,100x70e9",
                    help="the night's models, COUNTxPARAMETERS (default: an assumed mix for the 1,000 most "
                         "downloaded text-generation models)")
    ap.add_argument("--workers", type=int, default=8, help="GPUs (default 8: one node)")
    ap.add_argument("--speedup", type=float, default=50.0,
                    help="assumed: an accelerator's scan rate over this CPU's (default 50; not measured here)")
    ap.add_argument("--link-gbps", type=float, default=10.0, help="assumed: the node's link to the hub (default 10)")
    ap.add_argument("--download-mb", type=int, default=256)
    ap.add_argument("--model", default="pkg:smollm2-135m", help="the real model whose scan is timed")
    ap.add_argument("--night", type=int, default=20, help="hub models in the measured batch (default 20)")
    args = ap.parse_args()
    mix = [(int(n), float(p)) for n, _, p in (part.partition("x") for part in args.mix.split(","))]
    with tempfile.TemporaryDirectory(prefix="overnight-") as tmp:
        root = Path(tmp)
        print("measured here:")
        rate = download_rate(root, args.download_mb)
        print(f"  download from the loopback hub: {rate:.0f} MB/s ({args.download_mb} MB)")
        per_b = stage_rates(args.model)
        print("  per billion parameters on this CPU: " + ", ".join(f"{k} {v:.0f} s" for k, v in per_b.items()))
        on, off, held, limit = overlap(root, args.night, 2)
        print(f"  {args.night} hub models, --cache-limit {limit / 1e6:.0f} MB (a third of their sum), 2 workers, "
              f"detection only: {on:.1f} s fetched ahead, {off:.1f} s without ({off - on:+.1f} s hidden); the "
              f"batch held at most {held / 1e6:.0f} MB")
    print("assumed:")
    print("  a scan's time grows with the parameters as SmolLM2's stages do (per parameter);")
    print(f"  link {args.link_gbps:g} Gb/s ({args.link_gbps * 125:.0f} MB/s); accelerator {args.speedup:g}x this CPU "
          f"per parameter; bf16 weights; models {args.mix}")
    hours = project(mix, per_b, args.speedup, args.link_gbps, args.workers)
    n = sum(c for c, _ in mix)
    print(f"projected: {n} models on {args.workers} workers in {hours:.1f} h "
          f"({'fits' if hours <= 12 else 'does not fit'} a 12-hour night)")


if __name__ == "__main__":
    main()
