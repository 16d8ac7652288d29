#!/usr/bin/env bash
# Verify gfnet on a CUDA GPU and measure it: the tests/gpu suite, then training and inference
# throughput (fp32, bf16, bf16 compiled) with peak memory, the global filter's two forms and
# the one filter_form("auto") picks per grid, then a summary with the card's name.
#
#   scripts/gpu_check.sh [OUTPUT_DIR]        # default: $OUT if set, else gpu-check-output
#
# Environment: PYTHON (default .venv/bin/python, else python3), MODEL (gfnet-xs),
# TRAIN_BATCH (128), INFER_BATCH (256), STEPS (20), WORKERS (DataLoader workers for the loop;
# default: the cores, at most 8). Each JSON result is kept in OUTPUT_DIR.
set -uo pipefail

cd "$(dirname "$0")/.."
OUTPUT_DIR=${1:-${OUT:-gpu-check-output}}
mkdir -p "$OUTPUT_DIR"
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
MODEL=${MODEL:-gfnet-xs}
TRAIN_BATCH=${TRAIN_BATCH:-128}
INFER_BATCH=${INFER_BATCH:-256}
STEPS=${STEPS:-20}
CORES=$(nproc 2>/dev/null || echo 4)
WORKERS=${WORKERS:-$(( CORES < 8 ? CORES : 8 ))}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA GPU visible to $PYTHON; nothing to check" >&2
  exit 2
fi
"$PYTHON" - > "$OUTPUT_DIR/device.json" <<'EOF'
import json, torch
props = torch.cuda.get_device_properties(0)
print(json.dumps({"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                  "capability": f"{props.major}.{props.minor}", "torch": torch.__version__,
                  "cuda": torch.version.cuda, "bf16": torch.cuda.is_bf16_supported()}))
EOF
echo "== device: $(cat "$OUTPUT_DIR/device.json")"

status=0
echo "== tests/gpu"
"$PYTHON" -m pytest -m gpu tests/gpu -v -rs 2>&1 | tee "$OUTPUT_DIR/tests.txt"
tests_rc=${PIPESTATUS[0]}
[ "$tests_rc" -eq 0 ] || status=1

run_json() {  # NAME COMMAND...: run, keep stdout as NAME.json, stderr as NAME.log
  local name=$1; shift
  echo "== $name: $*"
  if ! "$@" > "$OUTPUT_DIR/$name.json" 2> "$OUTPUT_DIR/$name.log"; then
    echo "   failed (see $OUTPUT_DIR/$name.log)"; tail -5 "$OUTPUT_DIR/$name.log"; status=1
  fi
}

TRAIN=("$PYTHON" benchmarks/bench_train.py --device cuda --model "$MODEL"
       --batch-size "$TRAIN_BATCH" --steps "$STEPS" --num-workers "$WORKERS" --json)
run_json train_fp32 "${TRAIN[@]}" --precision fp32
run_json train_bf16 "${TRAIN[@]}" --precision bf16
run_json train_bf16_compile "${TRAIN[@]}" --precision bf16 --compile

PROFILE=("$PYTHON" -m gfnet_cli profile --model "$MODEL" --device cuda
         --batch-size "$INFER_BATCH" --repeats 20 --json)
run_json infer_fp32 "${PROFILE[@]}" --precision fp32
run_json infer_bf16 "${PROFILE[@]}" --precision bf16
run_json infer_bf16_compile "${PROFILE[@]}" --precision bf16 --compile

run_json input_pipeline "$PYTHON" benchmarks/bench_input_pipeline.py --workers 0,1,2,4 --json

# filter_form("auto") on CUDA: both forms per grid (7x7 ... 64x64), batch 1 and 32, fp32 and
# bf16, and the form auto picks; forward (inference) and forward + backward (training)
FORMS=("$PYTHON" benchmarks/bench_filter_forms.py --device cuda --repeats 10 --json)
run_json filter_forms "${FORMS[@]}"
run_json filter_forms_backward "${FORMS[@]}" --backward

echo
"$PYTHON" - "$OUTPUT_DIR" "$tests_rc" <<'EOF'
import json, sys
from pathlib import Path

out, tests_rc = Path(sys.argv[1]), int(sys.argv[2])

def load(name):
    try:
        return json.loads((out / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None

device = load("device") or {}
print(f"GPU: {device.get('name')} ({device.get('memory_gib')} GiB, sm {device.get('capability')}), "
      f"torch {device.get('torch')}, CUDA {device.get('cuda')}")
print(f"tests/gpu: {'passed' if tests_rc == 0 else 'FAILED'}")
print(f"{'what':<28}{'images/s':>10}{'loop img/s':>12}{'peak MiB':>10}{'compile s':>11}")
for name in ("train_fp32", "train_bf16", "train_bf16_compile"):
    row = load(name)
    if row:
        compile_s = row.get("bare_compile_s")
        print(f"{name:<28}{row['bare_images_per_second']:>10.0f}{row['loop_images_per_second']:>12.0f}"
              f"{row['peak_memory_mb'] or 0:>10.0f}{compile_s if compile_s is not None else '-':>11}")
for name in ("infer_fp32", "infer_bf16", "infer_bf16_compile"):
    rows = load(name)
    if rows:
        row = rows[0]
        compile_s = row.get("compile_s")
        print(f"{name:<28}{row['images_per_second'] or 0:>10.0f}{'-':>12}"
              f"{row['peak_memory_mb'] or 0:>10.0f}{compile_s if compile_s is not None else '-':>11}")
for name in ("filter_forms", "filter_forms_backward"):
    for row in load(name) or []:
        print(f"{name} {row['grid']}x{row['grid']}x{row['channels']} b{row['batch_size']} "
              f"{row['precision']}: fft {row['fft_ms']} ms, matmul {row['matmul_ms']} ms, "
              f"auto picks {row['auto']}")
pipeline = load("input_pipeline")
if pipeline:
    for row in pipeline["rows"]:
        print(f"input {row['pipeline']} {row['photo']} workers={row['workers']}: "
              f"{row['images_per_second']} images/s")
EOF
exit $status
