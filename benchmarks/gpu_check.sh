#!/usr/bin/env bash
# The GPU check of the paper configuration, in under 8 minutes on one GPU: benchmarks/paper_scale.py at the
# paper's size on CUDA, then the precision, memory-plan and distributed tests on the GPU (STAGE_TEST_DEVICE;
# the training tests' `train.device: auto` takes the GPU by itself), and every figure into one JSON file.
#
#   benchmarks/gpu_check.sh [OUT_DIR]        # default: $OUT (the device tool's folder) or ./gpu_check
#
# Installs nothing but the wheels in .whl/ (benchmarks/gpu_wheels.sh makes them), into /tmp/site; python3 must
# hold a CUDA build of torch. DEVICE=cpu runs the same steps on the CPU (a check of this script).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-.}/gpu_check}
device=${DEVICE:-cuda}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
    $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 2
    export PYTHONPATH="/tmp/site:$PWD"
else
    export PYTHONPATH="$PWD"
fi
$py - "$device" <<'PY' > "$out/environment.json" || exit 2
import json, sys
import torch, diffusers
cuda = torch.cuda.is_available()
if sys.argv[1] == "cuda" and not cuda:
    sys.exit("gpu_check: torch sees no CUDA device")
print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda, "diffusers": diffusers.__version__,
                  "device": torch.cuda.get_device_name(0) if cuda else "cpu"}))
PY
start=$(date +%s)
timeout 260 $py benchmarks/paper_scale.py --device "$device" --out "$out/paper_scale.json" 2>&1 | tee "$out/paper_scale.log"
bench=${PIPESTATUS[0]}
STAGE_TEST_DEVICE=$device timeout 200 $py -m pytest -q -p no:cacheprovider -x \
    tests/test_train_precision.py tests/test_rollout_precision.py tests/test_memory_plan.py tests/test_train_stages.py \
    2>&1 | tee "$out/tests.log"
tests=${PIPESTATUS[0]}
$py - "$out" "$bench" "$tests" "$(( $(date +%s) - start ))" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
figures = {"environment": json.loads((out / "environment.json").read_text()),
           "paper_scale_exit": int(sys.argv[2]), "tests_exit": int(sys.argv[3]), "seconds": int(sys.argv[4])}
if (out / "paper_scale.json").is_file():
    figures["paper_scale"] = json.loads((out / "paper_scale.json").read_text())
lines = (out / "tests.log").read_text().strip().splitlines()
figures["tests"] = lines[-1] if lines else None
(out / "figures.json").write_text(json.dumps(figures, indent=2))
print(f"wrote {out / 'figures.json'}: paper_scale exit {sys.argv[2]}, tests: {figures['tests']}")
PY
[ "$bench" = 0 ] && [ "$tests" = 0 ]
