#!/usr/bin/env bash
# Training and inference throughput, kiln (Burn, flex backend) vs TF-Keras (tensorflow-cpu
# 2.21) in the same run, same architectures, same batch, same synthetic data, all cores:
#   - the quickstart CNN on 28×28×1 (conv 32 → 64, dense 64, 10 classes);
#   - a three-conv CNN on 64×64×3 (conv 32 → 64 → 128, dense 64, 10 classes);
#   - MobileNetV2 (width 1.0, 10 classes) on 96×96×3, the depthwise model: EfficientNet-Lite0's
#     blocks (inverted residuals of 1×1 and depthwise convolutions, ReLU6, no squeeze-excite)
#     at the size configs/catsdogs.toml fine-tunes at; Keras ships MobileNetV2, not Lite0.
# Makes .venv-keras with tensorflow-cpu on first use (a large download).
#   bash bench/train_vs_keras.sh [STEPS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
steps=${1:-30}
venv=${KILN_KERAS_VENV:-$root/.venv-keras}
if ! "$venv/bin/python" -c 'import tensorflow' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "tensorflow-cpu==2.21.*"
fi
cargo build --quiet -p kiln-cli --bin pipeline
pipeline=${CARGO_TARGET_DIR:-$root/target}/debug/pipeline
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# model, input, conv filters (small_cnn only), timed steps
depthwise_steps=$(( steps / 3 > 3 ? steps / 3 : 3 ))
cases=("small_cnn 28,28,1 32,64 $steps" "small_cnn 64,64,3 32,64,128 $steps"
       "mobilenet_v2 96,96,3 - $depthwise_steps")
for i in "${!cases[@]}"; do
  read -r model input filters n <<< "${cases[$i]}"
  filter_args=()
  [ "$filters" != - ] && filter_args=(--conv-filters "$filters")
  "$pipeline" bench-train --model "$model" --input "$input" "${filter_args[@]}" --batch 64 \
    --steps "$n" --json > "$out/kiln$i.json"
  "$venv/bin/python" bench/keras_train.py --model "$model" --input "$input" "${filter_args[@]}" \
    --batch 64 --steps "$n" > "$out/keras$i.json"
done
python3 - "$out" "${#cases[@]}" <<'PY'
import json, sys
out, n = sys.argv[1], int(sys.argv[2])
print(f"{'model':<34} {'kiln train':>11} {'Keras train':>12} {'ratio':>6}   {'kiln infer':>11} {'Keras infer':>12} {'ratio':>6}   {'kiln busy':>9}")
for i in range(n):
    k = json.load(open(f"{out}/kiln{i}.json")); t = json.load(open(f"{out}/keras{i}.json"))
    name = f"{k['model']} {'x'.join(map(str, k['input']))}"
    kt, tt = k["train_images_per_second"], t["train_images_per_second"]
    ki, ti = k["infer_images_per_second"], t["infer_images_per_second"]
    busy = k.get("train_cores_busy")
    busy = f"{busy:.2f}/{k['cores']}" if busy is not None else "-"
    print(f"{name:<34} {kt:>9.0f}/s {tt:>10.0f}/s {kt/tt:>5.2f}x   {ki:>9.0f}/s {ti:>10.0f}/s {ki/ti:>5.2f}x   {busy:>9}")
print(f"(images/s, batch 64, {k['cores']} cores; TensorFlow {t['tensorflow']}; kiln busy: cores busy while")
print(" training, user + system CPU time over wall time)")
PY
