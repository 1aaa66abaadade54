#!/usr/bin/env bash
# The GPU check on a lent GPU machine that has no network (see /work/.library/device/README.md where
# that tool exists). Its python3 holds torch, transformers, accelerate, safetensors and psutil but not
# diffusers, bitsandbytes, torchao or gguf: they travel as wheels, carried with the repository (at most
# 64 MiB a call), and are installed into .site/ (ignored), which stays on the machine while it is warm.
#
#   here, with network:  bash benchmarks/gpu_check_device.sh download
#       .whl/a: bitsandbytes (43 MB); .whl/b: diffusers (6 MB), torchao (3.4 MB), gguf (0.1 MB)
#   device, call 1:      carry [".whl/a"]   bash benchmarks/gpu_check_device.sh install
#   device, call 2:      carry [".whl/b"]   bash benchmarks/gpu_check_device.sh install run [gpu_check args]
#       (timeout_s 600: about 15 s of installing, then the check within its 480 s budget)
#   When the repository and both folders fit 64 MiB together (`du -sh .whl`: about 53 MB), one call
#   does it all: carry [".whl"]   bash benchmarks/gpu_check_device.sh install run
#
# "run" writes the results to $OUT (brought back by the tool) or benchmarks/results, with the log;
# the committed results file is copied there first, so rows not run keep their last figures.
# Then, here: copy $OUT's <gpu>.md/.json to benchmarks/results/, commit, `python -m tools.navigation`.
set -euo pipefail
cd "$(dirname "$0")/.."
SITE="$PWD/.site"
PYTHON=${PYTHON:-python3}
WHEELS_FOR=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp
            --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)

for step in "$@"; do
  shift
  case "$step" in
    download)
      mkdir -p .whl/a .whl/b
      "$PYTHON" -m pip download -q "${WHEELS_FOR[@]}" -d .whl/a bitsandbytes==0.50.2
      "$PYTHON" -m pip download -q "${WHEELS_FOR[@]}" -d .whl/b diffusers==0.42.1 torchao==0.18.0 gguf==0.19.0
      du -sh .whl/a .whl/b
      ;;
    install)
      mkdir -p "$SITE"
      wheels=$(ls .whl/*.whl .whl/*/*.whl 2>/dev/null || true)
      if [ -n "$wheels" ]; then
        # shellcheck disable=SC2086
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" $wheels
      fi
      ls "$SITE"
      ;;
    run)
      export PYTHONPATH="$SITE:$PWD" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
      "$PYTHON" -c "import diffusers, bitsandbytes, torchao, torch; print('diffusers', diffusers.__version__, \
'bitsandbytes', bitsandbytes.__version__, 'torchao', torchao.__version__, 'torch', torch.__version__, \
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
      results="${OUT:-benchmarks/results}"
      mkdir -p "$results"
      [ "$results" = benchmarks/results ] || cp benchmarks/results/*.json "$results"/ 2>/dev/null || true
      set -o pipefail
      "$PYTHON" benchmarks/gpu_check.py --output "$results" "$@" 2>&1 | tee "$results/gpu-check.log"
      exit $?
      ;;
    *)
      echo "usage: $0 download | install [run [gpu_check.py arguments]]" >&2
      exit 2
      ;;
  esac
done
