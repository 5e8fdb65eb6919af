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


def scan_dict(folder, validate: dict | None = None, **kw) -> dict:
    """A scan on the CPU with load options `kw` and `validate` settings changed from the defaults."""
    return scan(str(folder), ScanConfig(load=LoadOptions(device="cpu", **kw)).replace(validate=validate or {})).to_dict()


HUB_REPO, HUB_SHA = "tiny-org/planted-llama", "0123456789abcdef0123456789abcdef01234567"


def hub_cache(home: Path) -> Path:
    """A hub cache as huggingface_hub lays it out, holding a planted Llama as HUB_REPO:
    refs/main -> HUB_SHA, snapshots/HUB_SHA/files. Returns the cache folder (HF_HUB_CACHE)."""
    repo = home / "hub" / ("models--" + HUB_REPO.replace("/", "--"))
    planted("llama", repo / "snapshots" / HUB_SHA)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(HUB_SHA)
    return home / "hub"


def agree_outside_zones(a: dict, b: dict, every: dict | None = None) -> int:
    """Scan results `a` and `b` (one sequential, one on every window; or screened and not) list the same
    candidates, and give the same verdict to each whose interval in `every` (default b) lies outside every
    threshold's zone, for its own effect and, for members of sets, for what it carries; inside a zone either
    verdict is right. Returns how many were compared."""
    every = every or b
    cfg = json.loads(every["config"]) if isinstance(every["config"], str) else every["config"]
    v = cfg["validate"]
    lines = ((v["min_ppl_ratio"], v["mild_zone"]), (v["catastrophic_ratio"], v["zone"]))
    assert [(s["layer"], s["row"], s["col"]) for s in a["candidates"]] == \
        [(s["layer"], s["row"], s["col"]) for s in b["candidates"]]
    compared = 0
    for x, y, e in zip(a["candidates"], b["candidates"], every["candidates"]):
        spans = [(e["ppl_ratio_lo"], e["ppl_ratio_hi"])] if e["ppl_ratio_lo"] is not None else []
        if e.get("carried_ratio_lo") is not None:
            spans.append((e["carried_ratio_lo"], e["carried_ratio_hi"]))
        if all(hi < t / zone or lo > t * zone for lo, hi in spans for t, zone in lines):
            assert x["verdict"] == y["verdict"], (x["layer"], x["row"], x["col"], x["verdict"], y["verdict"])
            compared += 1
    return compared
