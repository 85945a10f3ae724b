"""Run a .tflite in the official LiteRT interpreter (ai-edge-litert) — the oracle Kiln's
runtime is checked against. Never part of the product; used by tests/litert_conformance.rs.

usage: run_litert.py MODEL INPUT.npy OUTPUT.npy --kernels {default,builtin,reference}

INPUT holds N rows for a batch-1 model: each row is one invoke; outputs are stacked. INPUT's
dtype must be the model input's (float32, or int8/uint8 already quantized with the input
tensor's scale and zero point); OUTPUT keeps the output tensor's dtype.
Also prints, as JSON on stdout, the model's signature list and what LiteRT reads as each
input's and output's dtype and quantization, so the test can check names and parameters.
"""
import argparse
import json
import sys

import numpy as np
from ai_edge_litert import interpreter as litert

RESOLVERS = {
    # LiteRT's default: builtin kernels plus the default (XNNPACK) delegate.
    "default": litert.OpResolverType.AUTO,
    "builtin": litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    "reference": litert.OpResolverType.BUILTIN_REF,
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--kernels", choices=sorted(RESOLVERS), default="default")
    args = parser.parse_args()

    interpreter = litert.Interpreter(model_path=args.model, experimental_op_resolver_type=RESOLVERS[args.kernels])
    interpreter.allocate_tensors()
    (input_detail,) = interpreter.get_input_details()
    (output_detail,) = interpreter.get_output_details()
    rows = np.load(args.input)
    if rows.dtype != input_detail["dtype"]:
        print(f"input dtype {rows.dtype} != model {input_detail['dtype']}", file=sys.stderr)
        return 2
    outputs = []
    for row in rows:
        interpreter.set_tensor(input_detail["index"], row[np.newaxis, ...])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(output_detail["index"])[0].copy())
    np.save(args.output, np.stack(outputs))
    print(
        json.dumps(
            {
                "signatures": interpreter.get_signature_list(),
                "inputs": [describe(d) for d in interpreter.get_input_details()],
                "outputs": [describe(d) for d in interpreter.get_output_details()],
            }
        )
    )
    return 0


def describe(detail):
    """A tensor's name, dtype and per-tensor (scale, zero point) as LiteRT sees them."""
    scale, zero_point = detail["quantization"]
    return {
        "name": detail["name"],
        "dtype": np.dtype(detail["dtype"]).name,
        "scale": float(scale),
        "zero_point": int(zero_point),
    }


if __name__ == "__main__":
    sys.exit(main())
