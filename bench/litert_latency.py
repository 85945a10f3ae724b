"""p50 latency of LiteRT's interpreter on a .tflite (the peer kiln-runtime is measured
against). usage: litert_latency.py MODEL [--kernels reference|builtin|default] [--runs N]
[--threads N]. Prints one JSON object. Inputs are fixed pseudo-random values of each input's
dtype. `builtin` is LiteRT's optimized kernels without delegates; `default` is what LiteRT
runs out of the box (the XNNPACK delegate where it applies)."""
import argparse
import json
import time

import numpy as np
from ai_edge_litert import interpreter as litert

RESOLVERS = {
    "reference": litert.OpResolverType.BUILTIN_REF,
    "builtin": litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    "default": litert.OpResolverType.AUTO,
}


def p50_ms(model: str, kernels: str = "reference", runs: int = 200, threads: int = 1) -> float:
    interpreter = litert.Interpreter(
        model_path=model, experimental_op_resolver_type=RESOLVERS[kernels], num_threads=threads
    )
    interpreter.allocate_tensors()
    rng = np.random.default_rng(0)
    for detail in interpreter.get_input_details():
        dtype, shape = detail["dtype"], detail["shape"]
        if np.issubdtype(dtype, np.floating):
            value = rng.random(shape).astype(dtype)
        else:
            info = np.iinfo(dtype)
            value = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
        interpreter.set_tensor(detail["index"], value)
    for _ in range(max(1, runs // 10)):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        interpreter.invoke()
        times.append((time.perf_counter() - started) * 1e3)
    times.sort()
    return times[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--kernels", choices=sorted(RESOLVERS), default="reference")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    p50 = p50_ms(args.model, args.kernels, args.runs, args.threads)
    print(json.dumps({"kernels": args.kernels, "latency_ms_p50": p50, "runs": args.runs,
                      "threads": args.threads}))


if __name__ == "__main__":
    main()
