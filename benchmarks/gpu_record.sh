#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The GPU runs issues 2-6 still owe, in one go, on a host with an NVIDIA GPU (no CI machine has
# one). From the repository root, after `pip install --no-build-isolation --no-deps .` (or
# `pip install ".[test]"`):
#
#   bash benchmarks/gpu_record.sh            # writes benchmarks/results/gpu_<date>/
#   bash benchmarks/gpu_record.sh --dry-run  # prints the steps only
#
# Steps (each runs even when an earlier one failed; the exit code says whether all passed):
#   1. the `cuda`-marked tests: real-driver pools and copies, cuda_ipc pulls between processes,
#      the fault shim against PyTorch (matmul, CUDA graph replay) and against our pulls;
#   2. the integration suite with Placement.DEVICE on CUDA (LLMDD_TEST_DEVICE_BACKEND=cuda);
#   3. `llm-datadist bench` on host and device placement: cuda_ipc and tcp rows beside the
#      device-to-device / host-to-device / device-to-host ceilings (issues 3 and 5);
#   4. `llm-datadist serve-demo --device cuda`: tokens against the monolithic run over cuda_ipc
#      (issue 6);
#   5. the ucx transport with CUDA pools (issue 12): tests/integration/test_ucx_transport.py and
#      the ucx-parametrized pull tests with the device pool on CUDA, so UCX registers it as CUDA
#      memory (UCX_TLS=tcp,cuda_copy: staged; where the host has RDMA NICs and a GPUDirect-capable
#      UCX, also run it with UCX_TLS unset). The GPU host reaches no package registry: carry
#      PyPI's libucx-cu12 wheel (about 43 MB) under benchmarks/wheels/; this step installs it
#      with --no-deps and points LLMDD_UCX_LIBRARY at its libucp. Without a UCX the step says so
#      and fails, rather than passing with every ucx test skipped.
set -u
cd "$(dirname "$0")/.."
DATE=$(date +%Y-%m-%d)
OUT=benchmarks/results/gpu_${DATE}
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1

STEPS=(
  "tests_cuda|python -m pytest tests -m cuda -q -rs"
  "tests_device_cuda|env LLMDD_TEST_DEVICE_BACKEND=cuda python -m pytest tests/integration -q -rs"
  "bench|llm-datadist bench --placement host,device --out ${OUT}/bench_${DATE}_gpu.json"
  "serve_demo|llm-datadist serve-demo --device cuda --out ${OUT}/serve_demo_${DATE}_gpu.json --log-dir ${OUT}/serve_demo_logs"
  "ucx_cuda|ucx_cuda_step"
)

# Step 5: a UCX for the ucx transport's CUDA-memory tests (see the header).
ucx_cuda_step() {
  local whl lib
  whl=$(ls benchmarks/wheels/libucx_cu1[23]-*.whl 2>/dev/null | head -n 1)
  if [ -n "$whl" ]; then
    python -m pip install -q --no-deps "$whl" || return 1
  fi
  lib=$(python -c "import glob, site, sys; hits = sorted(h for d in site.getsitepackages() for h in glob.glob(d + '/libucx/lib/libucp.so.0')); print(hits[0] if hits else '')")
  if [ -n "$lib" ]; then
    export LLMDD_UCX_LIBRARY="$lib"
  fi
  python -c "from llm_datadist import _core; import json, sys; i = _core.ucx_info(); print(json.dumps(i)); sys.exit(0 if i['available'] else 1)" || {
    echo "no UCX loads here: carry a libucx-cu12 wheel under benchmarks/wheels/"; return 1; }
  env LLMDD_TEST_REQUIRE_UCX=1 LLMDD_TEST_DEVICE_BACKEND=cuda UCX_TLS="${UCX_TLS:-tcp,cuda_copy}" \
    python -m pytest tests/integration/test_ucx_transport.py tests/integration/test_pull.py -k ucx -q -rs
}
export -f ucx_cuda_step

if [ "$DRY" = 1 ]; then
  for step in "${STEPS[@]}"; do echo "${step#*|}"; done
  exit 0
fi

if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_record.sh: no CUDA device visible to torch; run it on a GPU host" >&2
  exit 2
fi
mkdir -p "$OUT"
{
  echo "date: $(date -Is)"
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
  llm-datadist doctor 2>&1 || true
} > "$OUT/machine.txt"

failed=0
for step in "${STEPS[@]}"; do
  name=${step%%|*}
  cmd=${step#*|}
  echo "== $name: $cmd" | tee "$OUT/$name.log"
  start=$(date +%s)
  bash -c "$cmd" >> "$OUT/$name.log" 2>&1
  rc=$?
  echo "== $name: exit $rc after $(( $(date +%s) - start )) s" | tee -a "$OUT/$name.log"
  [ "$rc" = 0 ] || failed=1
done
echo "records in $OUT (commit them with the commands above, which each log starts with)"
exit $failed
