import json
from pathlib import Path

from scanner.config import LoadOptions, ScanConfig
from scanner.planted import Plant, build
from scanner.scan import scan

MOE = {"mixtral", "qwen2_moe", "qwen3_moe"}
POSITIVE = {"super_weight", "super_set"}


def planted(arch: str, folder: Path, kind: str = "single", planted: bool = True) -> Path:
    e = 1 if arch in MOE else None
    plants = {"single": [Plant(1, 10, 20, e)],
              "pair": [Plant(1, 10, 20, e, 0.5), Plant(1, 10, 33, e, 0.5)],
              "rows": [Plant(1, 10, 20, e), Plant(1, 40, 20, e)]}[kind]
    return build(arch, folder, plants, planted=planted)


def truth(folder: Path) -> set:
    data = json.loads((folder / "planted.json").read_text())
    return {(p["layer"], p["module"], p["row"], p["col"], p["expert"]) for p in data["plants"]}


def positives(result: dict) -> dict:
    return {(s["layer"], s["module"], s["row"], s["col"], s["expert"]): s["verdict"]
            for s in result["candidates"] if s["verdict"] in POSITIVE}


def scan_dict(folder, **kw) -> dict:
    return scan(str(folder), ScanConfig(load=LoadOptions(device="cpu", **kw))).to_dict()


HUB_REPO, HUB_SHA = "tiny-org/planted-llama", "0123456789abcdef0123456789abcdef01234567"


def hub_cache(home: Path) -> Path:
    """A hub cache as huggingface_hub lays it out, holding a planted Llama as HUB_REPO:
    refs/main -> HUB_SHA, snapshots/HUB_SHA/files. Returns the cache folder (HF_HUB_CACHE)."""
    repo = home / "hub" / ("models--" + HUB_REPO.replace("/", "--"))
    planted("llama", repo / "snapshots" / HUB_SHA)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(HUB_SHA)
    return home / "hub"
