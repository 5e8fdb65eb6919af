"""Protection an engine can apply, measured with gguf's own quantizers on SmolLM2-135M: its packaged Q4_1 file
re-quantized (as `llama-quantize --allow-requantize` would) to Q4_0 in every matrix, to Q4_0 with the tensors of
`superweights protect --format llama-quantize` at Q8_0, and, as a control of the same size, to Q4_0 with another
layer's down projection at Q8_0. Perplexity of each on the same evaluation windows, paired per window against
the Q4_1 source, and the file sizes.

    .venv/bin/python bench/protect_bench.py                 # scans SmolLM2 first (about a minute)
    .venv/bin/python bench/protect_bench.py --catalog DIR   # its protect list from a catalog's latest scan
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--catalog", help="take the protect list from this catalog (default: scan into a temporary one)")
    ap.add_argument("--windows", type=int, default=16)
    args = ap.parse_args()

    import gguf

    from catalog.store import Catalog
    from catalog.rows import ok_row
    from cluster.protect import llama_quantize, protect_list
    from scanner.config import LoadOptions, ScanConfig
    from scanner.cpus import set_threads
    from scanner.load.loading import load
    from scanner.load.requantize import requantize
    from scanner.load.shipped import packaged_file
    from scanner.load.sources import resolve
    from scanner.measure.evaluator import Effect, ratio
    from scanner.scan import evaluator, scan_source

    set_threads()
    model, cfg = "pkg:smollm2-135m", ScanConfig(load=LoadOptions(device="cpu"))
    work = Path(tempfile.mkdtemp(prefix="protect-bench-"))
    catalog = Catalog(args.catalog or str(work / "catalog"))
    if not args.catalog:
        t = time.time()
        catalog.write_scan(ok_row(scan_source(resolve(model), cfg).to_dict()))
        print(f"scanned {model} in {time.time() - t:.0f} s")
    data = protect_list(catalog, model)
    flags = llama_quantize(data)
    rules = [tuple(a.split(" ", 1)[1].split("=")) for a in flags]
    layers = {w["layer"] for w in data["weights"]}
    src = packaged_file("smollm2-135m")[0]
    blocks = sum(t.name.endswith("ffn_down.weight") for t in gguf.GGUFReader(src).tensors)
    other = max(range(blocks), key=lambda i: min(abs(i - j) for j in layers))  # a down projection far from them
    files = {"Q4_1 (source)": src,
             "Q4_0": requantize(src, work / "q4_0.gguf", "Q4_0"),
             "Q4_0, protected at Q8_0": requantize(src, work / "protected.gguf", "Q4_0", tensor_types=rules),
             f"Q4_0, layer {other} down projection at Q8_0 (control)":
                 requantize(src, work / "control.gguf", "Q4_0", tensor_types=[(rf"blk\.{other}\.ffn_down\.weight", "q8_0")])}
    print(f"protect list: {', '.join(w['gguf_tensor'] + str(w['gguf_index']) for w in data['weights'])}")
    print("llama-quantize " + " ".join(flags) + " --allow-requantize IN.gguf OUT.gguf Q4_0")

    losses = {}
    for name, path in files.items():
        loaded = load(resolve(str(path)), cfg.load)
        try:
            ev = evaluator(loaded, cfg)
            n = min(args.windows, ev.windows.count)
            ev.ensure_base(n)
            losses[name] = [float(x.mean()) for x in ev.base_nll[:n]]  # per window, mean loss
        finally:
            loaded.close()
    source = losses["Q4_1 (source)"]
    print(f"\n{len(source)} windows; perplexity [95%] across windows; ratio against the Q4_1 source, paired per "
          f"window\n\n| file | size (bytes) | perplexity | ratio to source [95%] |\n|---|---|---|---|")
    for name, per in losses.items():
        e = Effect([a - b for a, b in zip(per, source)])
        lo, hi = e.interval(0.95)
        mine = Effect(per)
        plo, phi = mine.interval(0.95)
        print(f"| {name} | {os.path.getsize(files[name]):,} | {math.exp(mine.mean):.4g} [{math.exp(plo):.4g}, "
              f"{math.exp(phi):.4g}] | x{ratio(e.mean):.4g} [{ratio(lo):.4g}, {ratio(hi):.4g}] |")
    names = list(files)
    for name, against in ((names[2], names[1]), (names[3], names[1]), (names[2], names[3])):
        e = Effect([a - b for a, b in zip(losses[name], losses[against])])
        lo, hi = e.interval(0.95)
        print(f"{name} against {against}, paired: x{ratio(e.mean):.4g} [{ratio(lo):.4g}, {ratio(hi):.4g}]")
    # Q4_0 sets each block's scale from its largest magnitude, which it keeps (to fp16): the super weights too
    for w in data["weights"]:
        values = []
        for path in files.values():
            [t] = [t for t in gguf.GGUFReader(path).tensors if t.name == w["gguf_tensor"]]
            values.append(float(gguf.quants.dequantize(t.data, t.tensor_type)[tuple(w["gguf_index"])]))
        print(f"{w['gguf_tensor']}{w['gguf_index']}: " + ", ".join(
            f"{short} {v:.5g}" for short, v in zip(("source", "Q4_0", "protected", "control"), values)))


if __name__ == "__main__":
    main()
