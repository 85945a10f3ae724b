"""kiln-runtime vs LiteRT 2.3.0 on the same files in the same run: p50 latency of each, and
kiln's time as a multiple of each LiteRT kernel set's (< 1 = kiln faster), with the
geometric mean over all models. LiteRT runs its reference kernels, its optimized builtin
kernels (no delegate) and its default path (XNNPACK); both sides run on the same number of
threads, once per entry of `--threads` (default `1,all`: one thread, then every core).
usage: runtime_vs_litert.py PIPELINE_BINARY [--runs N] [--threads 1,all] MODEL.tflite..."""
import argparse
import json
import math
import os
import pathlib
import subprocess
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from litert_latency import p50_ms  # noqa: E402

PEERS = [("reference", "ref"), ("builtin", "builtin"), ("default", "xnnpack")]


def kiln_p50(binary: str, model: str, runs: int, threads: int) -> float:
    out = subprocess.run([binary, "bench", model, "--runs", str(runs), "--threads", str(threads),
                          "--json"],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return math.nan
    return json.loads(out.stdout)["latency_ms_p50"]


def geomean(values):
    values = [v for v in values if v == v and v > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else math.nan


def table(binary: str, models, runs: int, threads: int) -> None:
    header = f"{'model':<40} {'kiln ms':>9}" + "".join(f" {name + ' ms':>11}" for _, name in PEERS)
    header += "".join(f" {'kiln/' + name:>13}" for _, name in PEERS)
    print(f"kiln-runtime and LiteRT on {threads} thread(s); p50 of {runs} invokes")
    print(header)
    ratios = {name: [] for _, name in PEERS}
    for model in models:
        ours = kiln_p50(binary, model, runs, threads)
        theirs = []
        for kernels, name in PEERS:
            try:
                theirs.append(p50_ms(model, kernels, runs, threads))
            except Exception:  # LiteRT refuses the file: no ratio for it
                theirs.append(math.nan)
        row = f"{'/'.join(pathlib.Path(model).parts[-2:]):<40} {ours:>9.4f}"
        row += "".join(f" {t:>11.4f}" for t in theirs)
        for (_, name), t in zip(PEERS, theirs):
            ratio = ours / t if t == t and t > 0 else math.nan
            ratios[name].append(ratio)
            row += f" {ratio:>13.2f}"
        print(row, flush=True)
    summary = f"{'geometric mean (' + str(len(models)) + ' models)':<40} {'':>9}" + " " * (12 * len(PEERS))
    summary += "".join(f" {geomean(ratios[name]):>13.2f}" for _, name in PEERS)
    print(summary)
    print()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("models", nargs="+")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--threads", default="1,all",
                        help="comma-separated thread counts; 'all' is every core")
    args = parser.parse_args()
    for entry in args.threads.split(","):
        threads = (os.cpu_count() or 1) if entry.strip() == "all" else int(entry)
        table(args.binary, args.models, args.runs, threads)


if __name__ == "__main__":
    main()
