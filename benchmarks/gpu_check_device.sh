#!/usr/bin/env bash
# The GPU check on a lent GPU machine that has no network (see /work/.library/device/README.md where
# that tool exists), in ONE call. Its python3 holds torch, transformers, accelerate, safetensors and
# psutil but not diffusers, bitsandbytes, torchao or gguf: they travel as wheels in .whl/ (ignored,
# carried with the repository: about 53 MiB with it, under the 64 MiB a call carries), and are
# installed into a temporary folder by the same call that runs the check, so nothing depends on the
# machine staying warm between calls.
#
#   here, with network:  bash benchmarks/gpu_check_device.sh download
#       .whl/: bitsandbytes (43 MB; the NF4 rows), diffusers (6.4 MB), torchao (3.4 MB; the FP8 rows),
#       gguf (0.1 MB; the GGUF backend rows)
#   device, one call:    carry [".whl"], timeout_s 600:   bash benchmarks/gpu_check_device.sh run [gpu_check args]
#       (about 15 s of installing and 10 s of imports, then the check within its 420 s budget; the
#       last row may run 120 s past it)
#
# "run" writes the results to $OUT (brought back by the tool) or benchmarks/results after every row,
# with the log; the committed results file is copied there first, so rows not run keep their last
# figures. A failed version check is printed, not fatal: the check itself says which rows cannot run.
# Then, here: copy $OUT's <gpu>.md/.json to benchmarks/results/, commit, `python -m tools.navigation`.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS_FOR=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp
            --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
WHEELS=(bitsandbytes==0.50.2 diffusers==0.42.1 torchao==0.18.0 gguf==0.19.0)

case "${1:-}" in
  download)
    mkdir -p .whl
    "$PYTHON" -m pip download -q "${WHEELS_FOR[@]}" -d .whl "${WHEELS[@]}" || exit
    du -sh .whl
    ;;
  run)
    shift
    SITE=$(mktemp -d /tmp/gpu-check-site.XXXX)
    if ls .whl/*.whl >/dev/null 2>&1; then
      "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
        || echo "installing the wheels failed: the check runs with what this machine has"
    else
      echo "no .whl/ carried: the check runs with what this machine has"
    fi
    export PYTHONPATH="$SITE:$PWD" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
    "$PYTHON" -c "import diffusers, bitsandbytes, torchao, torch; print('diffusers', diffusers.__version__, \
'bitsandbytes', bitsandbytes.__version__, 'torchao', torchao.__version__, 'torch', torch.__version__, \
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" || echo "version check failed (above)"
    results="${OUT:-benchmarks/results}"
    mkdir -p "$results"
    [ "$results" = benchmarks/results ] || cp benchmarks/results/*.json "$results"/ 2>/dev/null || true
    "$PYTHON" benchmarks/gpu_check.py --output "$results" "$@" 2>&1 | tee "$results/gpu-check.log"
    exit "${PIPESTATUS[0]}"
    ;;
  *)
    echo "usage: $0 download | run [gpu_check.py arguments]" >&2
    exit 2
    ;;
esac
