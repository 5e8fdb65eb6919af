"""The quantization study of SmolLM2-135M (GGUF), timed: one load of the model, the scan that finds the super
weights to keep, then every setting (weights INT4 at blocks 64 to per tensor, four variants each; activations
INT8 plain and held out; the restore check), each on the same evaluation windows.

    .venv/bin/python bench/quant_bench.py                 # 16 windows per setting, as quantize-eval
    .venv/bin/python bench/quant_bench.py --windows 4     # a quick look
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from words import verdicts  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="pkg:smollm2-135m")
    ap.add_argument("--windows", type=int, default=16)
    args = ap.parse_args()

    from scanner.config import LoadOptions, ScanConfig
    from scanner.cpus import set_threads
    from scanner.load.loading import load
    from scanner.study.quant_finding import finding
    from scanner.study.quant_study import Study, StudyConfig
    from scanner.scan import evaluator, scan_loaded
    from scanner.load.sources import resolve

    set_threads()
    cfg = ScanConfig(load=LoadOptions(device="cpu"))
    t0 = time.time()
    loaded = load(resolve(args.model), cfg.load)
    t1 = time.time()
    result = scan_loaded(loaded, cfg)
    keep = [c.coord for c in result.candidates if verdicts.is_catastrophic(c.verdict)]
    t2 = time.time()
    study = Study(loaded, evaluator(loaded, cfg), keep, StudyConfig(windows=args.windows))
    t3 = time.time()
    times: dict[str, list[float]] = {}
    rows = []
    for kind in (study.weights, study.activations, study.restore):
        it = kind()
        while True:
            t = time.time()
            row = next(it, None)
            if row is None:
                break
            times.setdefault(row.study, []).append(time.time() - t)
            rows.append(row)
    t4 = time.time()
    print(f"{args.model}: load {t1 - t0:.1f} s, scan {t2 - t1:.1f} s, base pass on {study.n} windows "
          f"{t3 - t2:.1f} s, study {t4 - t3:.1f} s for {len(rows)} settings in one load "
          f"({', '.join(f'{k}: {len(v)} x {sum(v) / len(v):.1f} s' for k, v in times.items())})")
    print(f"kept: {', '.join(c.label() for c in keep)}")
    print(finding(rows))


if __name__ == "__main__":
    main()
