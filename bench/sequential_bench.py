"""How the defaults of the sequential rule were chosen: the zone factor (--zone) and the spending function's
shape (--spending), by simulation of ablations like those real models give; each threshold's zone on its own
(--mild-zone for x1.5, --zone for x10).

Each scenario is an ablation as measured on SmolLM2-135M with every window (`superweights scan
pkg:smollm2-135m --all-windows --json`, per-window ln ratios in `window_deltas`): its mean effect and its
spread across windows, the four kinds of text differing. For every (zone, spending) pair it prints, over
the scenarios and the 39 windows SmolLM2 has: the mean windows an ablation needs (cost), how often the
windows run out before the zone is decided (undecided), and the worst rate of a wrong decided side for a
true ratio just outside a zone (must stay at or under 2.5%).

    .venv/bin/python bench/sequential_bench.py [--runs 4000] [--windows 39]
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scanner.config import ValidateConfig  # noqa: E402
from scanner.measure.sequential import Design, schedule  # noqa: E402
from tests.fixtures.sequential_sim import draw, fast  # noqa: E402

# (name, mean ln ratio, sd across windows, kind offset): SmolLM2-135M's ablations measured on all 39 windows
# (`scan pkg:smollm2-135m --all-windows --json`: `window_deltas`; the set's spread from its interval).
SCENARIOS = [
    ("control (random weights)", 0.0, 0.0005, 0.0),
    ("layer-2 [507, 90], x1.46", math.log(1.461), 0.242, 0.11),
    ("layer-2 [507, 430], x1.52", math.log(1.522), 0.537, 0.24),
    ("layer-2 group, x2.44", math.log(2.438), 0.45, 0.2),
    ("layer-11 [507, 1229], x7.7", math.log(7.694), 0.726, 0.52),
    ("layer-11 [507, 1487], x1.16", math.log(1.158), 0.068, 0.04),
    ("layer-11 set, x9.5e4", math.log(9.5e4), 2.64, 1.5),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=4000)
    ap.add_argument("--windows", type=int, default=39)
    args = ap.parse_args()
    cfg = ValidateConfig()
    rng = np.random.default_rng(0)
    lines = (math.log(cfg.min_ppl_ratio), math.log(cfg.catastrophic_ratio))
    looks = schedule(args.windows, cfg.min_windows, True)
    print(f"{args.windows} windows, looks {looks}, confidence {cfg.confidence}; {args.runs} runs per cell\n")
    print("Each threshold's zone on its own: the scenarios' ablations judged against that line only\n")
    print("| line | zone | spending | mean windows | undecided (worst scenario) | wrong side outside the zone |")
    print("|---|---|---|---|---|---|")
    for line in lines:
        for zone in (1.2, 1.25, 1.3, 1.35, 1.4, 1.5):
            for gamma in (-4.0, -2.0, 0.0, 1.0):
                design = Design(looks, 1 - cfg.confidence, gamma)
                used, undecided = [], []
                for _, mean, sd, kinds in SCENARIOS:
                    s = fast(design, math.log(zone), line, draw(rng, args.runs, args.windows, mean, sd, kinds))
                    used.append(s["windows"].mean())
                    undecided.append(1 - s["decided"].mean())
                wrong = 0.0
                for side in (+1, -1):
                    x = draw(rng, args.runs, args.windows, line + side * (math.log(zone) + 0.01), 0.5, 0.3)
                    s = fast(design, math.log(zone), line, x)
                    wrong = max(wrong, float(np.mean(s["decided"] & (s["above"] != (side > 0)))))
                print(f"| x{math.exp(line):g} | {zone:g} | {gamma:g} | {np.mean(used):.1f} | {max(undecided):.1%} "
                      f"({SCENARIOS[int(np.argmax(undecided))][0]}) | {wrong:.2%} |")


if __name__ == "__main__":
    main()
