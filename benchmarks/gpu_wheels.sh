#!/usr/bin/env bash
# Run here, where pip reaches the package registry: the wheels benchmarks/gpu_check.sh needs beyond a GPU image
# that already holds torch, numpy, matplotlib, opencv, scipy, scikit-learn, pillow, safetensors, pyyaml, tqdm,
# transformers and pytest (Python 3.12, x86-64), into .whl/ (git-ignored through .git/info/exclude), at the
# versions of requirements.lock. Carry .whl to the GPU machine with the working tree.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
pin() { grep -i "^$1==" requirements.lock | head -1; }
names=(diffusers jsonschema jsonschema-specifications referencing rpds-py nuscenes-devkit pyquaternion shapely
       descartes fire termcolor cachetools pycocotools parameterized imageio-ffmpeg)
specs=()
for n in "${names[@]}"; do specs+=("$(pin "$n")"); done
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "${specs[@]}"
du -sh .whl
