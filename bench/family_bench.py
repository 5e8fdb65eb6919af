"""A real quantization family of SmolLM2-135M, batch-scanned and compared, timed:

    pkg:smollm2-135m        the shipped GGUF (Q4_1): the root
    pkg:smollm2-135m-bf16   it, dequantized by transformers and saved as safetensors in bfloat16 (its model
                            card names the root as base_model)
    pkg:smollm2-135m-q4_0   it, re-quantized to Q4_0 with the gguf library (general.base_model.* in its
                            metadata names the root)

The two derivatives are made on first use into the cache (scanner/requantize.py; timed here). The batch (a
models file without any base= line: each base comes from the files) scans the three and compares each
derivative with the root (`superweights diff`: kept / moved / lost / new, cross-ablations), then prints the
comparisons and the family as `query --family` shows it. `make scan` runs the same batch with the rest of the
default list.

    .venv/bin/python bench/family_bench.py                 # into out/family
    .venv/bin/python bench/family_bench.py --planted       # the planted family of the tests instead (seconds)
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SW = str(Path(sys.executable).with_name("superweights"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "family")
    ap.add_argument("--planted", action="store_true", help="diff the planted family of tests/cluster/test_families.py")
    args = ap.parse_args()
    if args.planted:
        return planted(args.out.resolve())

    from catalog import query, views
    from catalog.lineage import render
    from catalog.store import Catalog
    from scanner.load.sources import resolve

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    made = {}
    for spec in ("pkg:smollm2-135m-bf16", "pkg:smollm2-135m-q4_0"):
        t = time.time()
        resolve(spec)
        made[spec] = time.time() - t
    models = out / "models.txt"
    models.write_text("pkg:smollm2-135m\npkg:smollm2-135m-bf16\npkg:smollm2-135m-q4_0\n")
    catalog = out / "catalog"
    t = time.time()
    subprocess.run([SW, "batch", str(models), "--catalog", str(catalog), "-q"], check=True)
    t_batch = time.time() - t
    cat = Catalog(catalog)
    cols, rows = query.run(cat, "SELECT * FROM lineage ORDER BY b_model")
    for r in rows:
        print(render(dict(zip(cols, r))) + "\n")
    cols, rows = query.run(cat, *views.family_sql("pkg:smollm2-135m"))
    print(query.render(cols, rows, "table"))
    print("\n" + ", ".join(f"{k} made in {v:.1f} s" for k, v in made.items())
          + f" (0 when already in the cache); batch (3 scans, 2 comparisons) {t_batch:.1f} s")


def planted(out: Path) -> None:
    """The planted base against its fine-tune, a fine-tune planted at another column, and a hard fine-tune."""
    import shutil

    from scanner.planted import Plant, build
    from tests.fixtures.planted_family import finetune

    shutil.rmtree(out, ignore_errors=True)
    base = build("llama", out / "base", [Plant(1, 10, 20)])
    finetune(base, out / "ft")
    finetune(build("llama", out / "moved0", [Plant(1, 10, 33)]), out / "moved")
    finetune(base, out / "heavy", steps=8, lr=1e-3)
    for other in ("ft", "moved", "heavy"):
        t = time.time()
        subprocess.run([SW, "diff", str(base), str(out / other), "--catalog", str(out / "catalog"), "-q"], check=True)
        print(f"({time.time() - t:.1f} s)\n")


if __name__ == "__main__":
    main()
