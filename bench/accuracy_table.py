#!/usr/bin/env python3
"""accuracy_table.py OUT_DIR: the markdown table of docs/results/accuracy.md
from the sweep.csv that bench/accuracy.sh wrote: per level and row, the
perplexity on each text with its change against uniform (magnitude
selection), the realized sparsity (the worst over the texts), and the
profiling time of the row's variant (all levels together)."""
import csv
import math
import sys

rows = list(csv.DictReader(open(sys.argv[1] + "/sweep.csv")))
texts = list(dict.fromkeys(r["data"] for r in rows))
cells = {}
for r in rows:
    key = (float(r["level"]), r["label"])
    cells.setdefault(key, {})[r["data"]] = r
head = "| level | row | " + " | ".join(f"{t} ppl (vs uniform)" for t in texts) + " | realized | profile s |"
print(head)
print("|" + "---|" * (head.count("|") - 1))
for (level, label), by in cells.items():
    if level == 0:
        continue
    out = []
    for t in texts:
        r = by[t]
        v = float(r["vs_uniform"]) if r["vs_uniform"] else math.nan
        out.append(f"{float(r['perplexity']):.2f}" + ("" if math.isnan(v) else f" ({100 * v:+.1f} %)"))
    realized = min(float(by[t]["realized_sparsity"]) for t in texts)
    prof = float(next(iter(by.values()))["profile_seconds"] or 0)
    print(f"| {level:.1f} | {label} | " + " | ".join(out) + f" | {realized:.4f} | {prof:.2f} |")
