#!/usr/bin/env bash
# GPU tests (and, with BENCH=1, a quick GPU benchmark) on the device machine (H100/H200: Python 3.12 and
# torch with CUDA preinstalled; our other dependencies travel as wheels in .whl/, see .whl/gpu_cmd.sh).
#
# From a session that has a device machine, with the device tool:
#   run(command="bash tests_gpu/run_on_device.sh", carry=[".whl"], timeout_s=600)
# Outputs under $OUT: versions.txt, pytest_gpu.log, pytest_gpu.xml (and bench_gpu.json, BENCHMARKS_gpu.md).
#
# onnxruntime-cuda: the image has the CPU onnxruntime. onnxruntime-gpu 1.31.1 (CUDA 13, matching the image's
# nvidia-* libraries) is a ~256 MB wheel, over one call's 64 MiB: set ORT_GPU_WHEEL to its path on the machine
# (e.g. reassembled under /tmp from parts carried by earlier calls of the same warm machine); without it the
# onnxruntime-cuda tests skip. TensorRT is not on the image: its tests skip unless `import tensorrt` works.
set -uo pipefail
OUT=${OUT:-/tmp/hepzoo_gpu_out}
mkdir -p "$OUT"
SITE=/tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl || exit 1
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target "$SITE" . || exit 1
export PYTHONPATH="$SITE"
if [ -n "${ORT_GPU_WHEEL:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site_ortgpu "$ORT_GPU_WHEEL" || exit 1
  export PYTHONPATH="/tmp/site_ortgpu:$SITE"  # shadows the image's CPU onnxruntime (same import name)
fi
# the installed hepzoo, not the checkout's top-level folders; the checkout's zoo/ releases
export PYTHONSAFEPATH=1 HEPZOO_ZOO="$PWD/zoo" PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 - <<'PY'
import platform, torch, onnxruntime as ort
print("python", platform.python_version(), "| torch", torch.__version__, "cuda", torch.version.cuda,
      "cudnn", torch.backends.cudnn.version(), "|", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")
print("onnxruntime", ort.__version__, ort.get_available_providers())
try:
    import tensorrt
    print("tensorrt", tensorrt.__version__)
except Exception as error:  # noqa: BLE001
    print("tensorrt: not importable:", error)
from hepzoo.runtime import available_backends
print("hepzoo backends here:", available_backends())
PY
} 2>&1 | tee "$OUT/versions.txt"
# torch's own deprecation noise differs between torch versions: not ours, so not an error here
python3 -m pytest tests_gpu -v -rs -p no:cacheprovider --junitxml="$OUT/pytest_gpu.xml" \
  -W "ignore::DeprecationWarning:torch.*" -W "ignore::FutureWarning:torch.*" 2>&1 | tee "$OUT/pytest_gpu.log"
status=${PIPESTATUS[0]}
if [ "${BENCH:-0}" = 1 ]; then
  backends=$(python3 -c "from hepzoo.runtime import available_backends as a; print(','.join(['torch-eager', *a()]))")
  timeout 400 python3 -m hepzoo.cli bench --quick --backends "$backends" --tag "gpu-$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' ' '-' | tr -cd 'A-Za-z0-9-')" \
    --out "$OUT/bench_gpu.json" --markdown "$OUT/BENCHMARKS_gpu.md" 2>&1 | tail -40
fi
exit "$status"
