#!/usr/bin/env bash
# Training and inference throughput, kiln (Burn, flex backend) vs TF-Keras (tensorflow-cpu
# 2.21) in the same run, same architectures, same batch, same synthetic data, all cores:
#   - the quickstart CNN on 28×28×1 (conv 32 → 64, dense 64, 10 classes);
#   - a three-conv CNN on 64×64×3 (conv 32 → 64 → 128, dense 64, 10 classes).
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
cases=("28,28,1 32,64" "64,64,3 32,64,128")
for i in "${!cases[@]}"; do
  read -r input filters <<< "${cases[$i]}"
  "$pipeline" bench-train --input "$input" --conv-filters "$filters" --batch 64 \
    --steps "$steps" --json > "$out/kiln$i.json"
  "$venv/bin/python" bench/keras_train.py --input "$input" --conv-filters "$filters" \
    --batch 64 --steps "$steps" > "$out/keras$i.json"
done
python3 - "$out" "${#cases[@]}" <<'PY'
import json, sys
out, n = sys.argv[1], int(sys.argv[2])
print(f"{'model':<34} {'kiln train':>11} {'Keras train':>12} {'ratio':>6}   {'kiln infer':>11} {'Keras infer':>12} {'ratio':>6}")
for i in range(n):
    k = json.load(open(f"{out}/kiln{i}.json")); t = json.load(open(f"{out}/keras{i}.json"))
    name = f"{k['model']} {'x'.join(map(str, k['input']))}"
    kt, tt = k["train_images_per_second"], t["train_images_per_second"]
    ki, ti = k["infer_images_per_second"], t["infer_images_per_second"]
    print(f"{name:<34} {kt:>9.0f}/s {tt:>10.0f}/s {kt/tt:>5.2f}x   {ki:>9.0f}/s {ti:>10.0f}/s {ki/ti:>5.2f}x")
print(f"(images/s, batch 64, {k['cores']} cores; TensorFlow {t['tensorflow']})")
PY
