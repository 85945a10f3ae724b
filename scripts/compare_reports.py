#!/usr/bin/env python3
"""Compares two runs' report.json, ignoring what changes from run to run: timings
(seconds, latencies, speedups), the absolute path of the config file and whether the
decoded-image cache was warm.

    python3 scripts/compare_reports.py RUN_DIR_A RUN_DIR_B

Exits 1 and lists every other difference; also compares the runs' .tflite files byte for
byte. For refactors that must not change results (same seed, same artifacts)."""
import json
import pathlib
import sys

TIMINGS = {"seconds", "data_seconds", "latency_ms_p50", "speedup_vs_fp32", "total_seconds"}
MACHINE = {"config_file", "cache_hits"}


def diff(a, b, path, out):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key in TIMINGS or key in MACHINE:
                continue
            if key not in a or key not in b:
                out.append(f"{path}.{key}: only in {'B' if key not in a else 'A'}"
                           f" ({json.dumps(b.get(key, a.get(key)))[:80]})")
                continue
            diff(a[key], b[key], f"{path}.{key}", out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{path}: {len(a)} vs {len(b)} items")
        for i, (x, y) in enumerate(zip(a, b)):
            diff(x, y, f"{path}[{i}]", out)
    elif a != b:
        out.append(f"{path}: {json.dumps(a)[:80]} vs {json.dumps(b)[:80]}")


def main():
    a_dir, b_dir = (pathlib.Path(p) for p in sys.argv[1:3])
    out = []
    a = json.loads((a_dir / "report.json").read_text())
    b = json.loads((b_dir / "report.json").read_text())
    diff(a, b, "report", out)
    names = sorted({p.name for p in a_dir.glob("*.tflite")} | {p.name for p in b_dir.glob("*.tflite")})
    for name in names:
        fa, fb = a_dir / name, b_dir / name
        if not (fa.exists() and fb.exists()) or fa.read_bytes() != fb.read_bytes():
            out.append(f"{name}: differs")
    print(f"{len(names)} .tflite files compared")
    for line in out:
        print(line)
    sys.exit(1 if out else 0)


if __name__ == "__main__":
    main()
