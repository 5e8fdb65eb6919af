"""The GPU check: SmolLM2-135M (GGUF) and the 1.34 B planted bench model scanned on CUDA in bfloat16 and in
float32; their verdicts compared with this machine's CPU scans (bench/data/cpu_verdicts.json); wall time and
weights scanned per second printed. One prepared run, for a session lent a GPU machine:

    .venv/bin/python bench/gpu_check.py                          # on the GPU machine (builds the bench model)
    .venv/bin/python bench/gpu_check.py --device cpu --expect    # writes cpu_verdicts.json (on a CPU machine)

Verdicts compared: every candidate whose verdict is super_weight, super_set or mild, as (layer, row, col,
verdict). A bfloat16 scan may legitimately move a weight near a threshold; such differences are printed
with both intervals so that a reader can tell a precision effect from a bug.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from words import verdicts  # noqa: E402
EXPECTED = ROOT / "bench" / "data" / "cpu_verdicts.json"


def models(bench_dir: str) -> dict[str, str]:
    from scan_bench import build

    big = Path(bench_dir) / "llama-20x2048x8192-steady"  # scan_bench.py builds the same model
    if not (big / "planted.json").exists():
        build(big, 20, 2048, 8192)
    return {"pkg:smollm2-135m": "pkg:smollm2-135m", "bench-1.34b": str(big)}


def scan_once(spec: str, device: str, dtype: str) -> dict:
    from scanner.config import LoadOptions, ScanConfig
    from scanner.scan import scan

    t = time.time()
    r = scan(spec, ScanConfig(load=LoadOptions(device=device, dtype=dtype))).to_dict()
    wall = time.time() - t
    found = {f"{s['layer']}:{s['row']}:{s['col']}": [s["verdict"], s["ppl_ratio_lo"], s["ppl_ratio_hi"]]
             for s in r["candidates"] if verdicts.matters(s["verdict"])}
    return {"wall_s": wall, "weights_per_s": r["num_parameters"] / wall, "dtype": r["dtype"], "device": r["device"],
            "timings": r["timings"], "window_evaluations": r["window_evaluations"], "found": found}


def _outside(lo: float | None, hi: float | None) -> bool:
    from scanner.config import ValidateConfig

    v = ValidateConfig()
    return lo is not None and all(hi < t / z or lo > t * z for t, z in ((v.min_ppl_ratio, v.mild_zone),
                                                                       (v.catastrophic_ratio, v.zone)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dir", default="/tmp/sw-scan-bench")
    ap.add_argument("--expect", action="store_true", help="write the float32 verdicts as the expected ones")
    args = ap.parse_args()
    from scanner.cpus import set_threads

    set_threads()
    specs = models(args.dir)
    if args.expect:
        out = {name: scan_once(spec, args.device, "float32") for name, spec in specs.items()}
        EXPECTED.parent.mkdir(exist_ok=True)
        EXPECTED.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
        print(f"wrote {EXPECTED}: " + "; ".join(f"{k} {v['wall_s']:.1f} s" for k, v in out.items()))
        return
    expected = json.loads(EXPECTED.read_text())
    ok = True
    for name, spec in specs.items():
        scan_once(spec, args.device, "bfloat16")  # warm-up: CUDA context, kernels, the file cache
        for dtype in ("bfloat16", "float32"):
            got = scan_once(spec, args.device, dtype)
            want = expected[name]["found"]
            # inside a threshold's zone either verdict is right: compared where the CPU's interval is outside
            same = all(got["found"].get(k, [None])[0] == v[0] for k, v in want.items() if _outside(v[1], v[2]))
            ok &= same or dtype != "float32"  # float32 must agree; bfloat16 differences are reported
            print(f"{name} {got['device']} {got['dtype']}: {got['wall_s']:.2f} s wall, "
                  f"{got['weights_per_s'] / 1e9:.2f} G weights/s, {got['window_evaluations']} window evaluations, "
                  f"timings {json.dumps({k: round(v, 2) for k, v in got['timings'].items()})}; "
                  f"verdicts equal the CPU's: {same}")
            for k in sorted(set(got["found"]) | set(want)):
                if got["found"].get(k, [None])[0] != want.get(k, [None])[0]:
                    print(f"  {k}: here {got['found'].get(k)}, CPU {want.get(k)} (verdict, interval)")
    print("GPU CHECK " + ("PASSED" if ok else "FAILED"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
