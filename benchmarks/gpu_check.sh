#!/usr/bin/env bash
# minescan on the GPU machine (NVIDIA H200, Python 3.12, no package registry): ONNX Runtime's CUDA provider
# benched on the demo detector and the ResNet-50 fixture, FP32 and FP16, batches 1,4,8,16, in one run.
# Nothing of it has run on a GPU yet.
#
# USAGE: the exact sequence
#   0. HERE:   bash benchmarks/gpu_prepare.sh
#              (downloads the wheels, packs them with /tmp/r50/r50.onnx, splits into <= 50 MiB pieces under the
#              git-ignored benchmarks/.gpu-bundle/, writes manifest.sha256 and calls.txt: the calls below, filled in)
#   1. DEVICE, one call per piece but the last, each within the machine's 30 s warm time of the one before
#      (a machine that went cold starts bare: /tmp is gone, begin again at 1):
#        run(command="bash benchmarks/gpu_check.sh stash",
#            carry=["benchmarks/.gpu-bundle/manifest.sha256", "benchmarks/.gpu-bundle/pieces/bundle.tar.00"], timeout_s=60)
#        ... bundle.tar.01 ... up to the last piece but one
#      Each moves its piece to /tmp/gpu-bundle/ there, checks its sha256 and returns at once, saying which
#      pieces are still missing.
#   2. DEVICE, the last call: carries the last piece and measures:
#        run(command="bash benchmarks/gpu_check.sh run",
#            carry=["benchmarks/.gpu-bundle/manifest.sha256", "benchmarks/.gpu-bundle/pieces/bundle.tar.<last>"],
#            timeout_s=540)
#      It joins the pieces, checks every sha256, installs the wheels with
#      `pip install --no-deps --no-index --target /tmp/gpu-site`, builds minescan (native module, CUDA part
#      when nvcc is found, else without it) into the same folder, points ONNX Runtime's preload_dlls at the
#      machine's nvidia-* wheels, and runs benchmarks/gpu_check.py with PYTHONPATH=/tmp/gpu-site.
#      Results come back as $OUT/gpu_check.json (everything: machine, models, probes, each bench's JSON and a
#      per-batch summary of the pipeline against the model-only floor) and $OUT/gpu_check.log.
#   3. give_back() unless rerunning at once.
#
# Dry run anywhere without a GPU (the plumbing, on the CPU; python3 needs numpy, onnx, onnxruntime):
#   GPU_CHECK_BACKEND=cpu GPU_CHECK_MODELS=demo GPU_CHECK_BATCHES=1 GPU_CHECK_SCENE_SIZE=1024 \
#   GPU_CHECK_PROBES=cpu,cuda GPU_CHECK_KEEP_PIECES=1 GPU_CHECK_STASH=/tmp/gpu-check-stash GPU_CHECK_SITE=/tmp/gpu-check-site \
#   OUT=/tmp/gpu-check-out bash benchmarks/gpu_check.sh run
#   (the pieces in benchmarks/.gpu-bundle/pieces/ here are copied, not moved, all at once)
#
# Settings (environment): PYTHON (python3), OUT (required for run), GPU_CHECK_STASH (/tmp/gpu-bundle),
# GPU_CHECK_SITE (/tmp/gpu-site), GPU_CHECK_BACKEND (cuda), GPU_CHECK_MODELS (demo,r50), GPU_CHECK_PRECISIONS
# (fp32,fp16), GPU_CHECK_BATCHES (1,4,8,16), GPU_CHECK_SCENE_SIZE (4096), GPU_CHECK_PROBES (cuda,tensorrt),
# GPU_CHECK_DEADLINE_S (500: seconds after the start by which the last bench must be started),
# GPU_CHECK_KEEP_PIECES (0; 1: stash copies the pieces instead of moving them).
set -uo pipefail

MODE="${1:-}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
STASH="${GPU_CHECK_STASH:-/tmp/gpu-bundle}"
SITE="${GPU_CHECK_SITE:-/tmp/gpu-site}"
MANIFEST="$REPO/benchmarks/.gpu-bundle/manifest.sha256"
STARTED=$SECONDS

say() { echo "gpu_check: $*"; }

stash() {
  mkdir -p "$STASH/pieces"
  [[ -f "$MANIFEST" ]] && cp "$MANIFEST" "$STASH/manifest.sha256"
  local piece
  for piece in "$REPO"/benchmarks/.gpu-bundle/pieces/bundle.tar.*; do
    [[ -f "$piece" ]] || continue
    if [[ "${GPU_CHECK_KEEP_PIECES:-0}" == 1 ]]; then cp "$piece" "$STASH/pieces/"; else mv -f "$piece" "$STASH/pieces/"; fi
    say "stashed $(basename "$piece")"
  done
  [[ -f "$STASH/manifest.sha256" ]] || { say "no manifest.sha256 yet: carry benchmarks/.gpu-bundle/manifest.sha256"; return 1; }
  local missing=() name
  for name in $(awk '$2 ~ /^bundle\.tar\./ {print $2}' "$STASH/manifest.sha256"); do
    if [[ ! -f "$STASH/pieces/$name" ]]; then
      missing+=("$name")
    elif ! grep " $name\$" "$STASH/manifest.sha256" | (cd "$STASH/pieces" && sha256sum --check --quiet --status); then
      say "$name is damaged: send it again"; rm -f "$STASH/pieces/$name"; missing+=("$name")
    fi
  done
  if (( ${#missing[@]} )); then say "missing: ${missing[*]}"; return 3; fi
  say "all pieces here"
}

unpack() {
  [[ -f "$SITE/.installed" ]] && { say "wheels already installed in $SITE"; return 0; }
  local names
  names=$(awk '$2 ~ /^bundle\.tar\./ {print $2}' "$STASH/manifest.sha256" | sort)
  (cd "$STASH/pieces" && cat $names) > "$STASH/bundle.tar" || return 1
  (cd "$STASH" && grep ' bundle\.tar$' manifest.sha256 | sha256sum --check --quiet) || { say "bundle.tar: sha256 mismatch"; return 1; }
  rm -rf "$STASH/content" && mkdir -p "$STASH/content" && tar -C "$STASH/content" -xf "$STASH/bundle.tar" || return 1
  (cd "$STASH/content" && sha256sum --check --quiet CONTENTS.sha256) || { say "bundle contents: sha256 mismatch"; return 1; }
  rm -f "$STASH/bundle.tar"
  mkdir -p "$STASH/models" && mv -f "$STASH"/content/models/* "$STASH/models/"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "$STASH"/content/wheels/*.whl || return 1
  touch "$SITE/.installed"
  say "installed $(ls "$STASH"/content/wheels | wc -l) wheels into $SITE"
}

cuda_paths() {
  # ONNX Runtime's preload_dlls looks for nvidia/*/lib beside its own folder, then on the loader's paths: give it both.
  local system
  system="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  if [[ -d "$system/nvidia" && ! -e "$SITE/nvidia" ]]; then ln -s "$system/nvidia" "$SITE/nvidia"; fi
  if [[ -d "$system/nvidia" ]]; then
    LD_LIBRARY_PATH="$(find "$system/nvidia" -maxdepth 3 -type d -name lib | paste -sd:)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export LD_LIBRARY_PATH
  fi
  local nvcc
  nvcc="$(command -v nvcc || ls /usr/local/cuda/bin/nvcc /usr/local/cuda-*/bin/nvcc 2>/dev/null | head -1 \
          || find "$system/nvidia" -maxdepth 4 -name nvcc -type f 2>/dev/null | head -1)"
  if [[ -n "$nvcc" ]]; then export CUDACXX="$nvcc"; say "nvcc: $nvcc"; else say "no nvcc found"; fi
}

build_minescan() {
  # minescan itself, from this tree, with its native module: built here without a registry (--no-build-isolation:
  # scikit-build-core and nanobind come from $SITE), installed into $SITE so it shadows nothing of the tree.
  local wheels="$STASH/minescan-wheel" log="$OUT/build.log"
  rm -rf "$wheels"
  if ! "$PYTHON" -m pip wheel -q --no-index --no-deps --no-build-isolation -w "$wheels" "$REPO" >"$log" 2>&1; then
    say "minescan build with CUDA failed (tail of build.log below); building without the CUDA part"
    tail -20 "$log"
    "$PYTHON" -m pip wheel -q --no-index --no-deps --no-build-isolation -w "$wheels" \
      --config-settings=cmake.define.MINESCAN_CUDA=OFF "$REPO" >>"$log" 2>&1 || { tail -30 "$log"; return 1; }
  fi
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" "$wheels"/minescan-*.whl || return 1
  say "built and installed $(basename "$wheels"/minescan-*.whl) in $((SECONDS - STARTED)) s from the start"
}

measure() {
  local deadline=${GPU_CHECK_DEADLINE_S:-500}
  local budget=$(( deadline - (SECONDS - STARTED) ))
  (( budget > 60 )) || { say "only ${budget} s left before the deadline: nothing measured"; return 1; }
  mkdir -p /tmp/gpu-check-run
  cd /tmp/gpu-check-run || return 1  # not the repo root: the minescan in $SITE is the one that runs
  PYTHONUNBUFFERED=1 "$PYTHON" "$REPO/benchmarks/gpu_check.py" --out "$OUT" --work /tmp/gpu-check-run \
    --backend "${GPU_CHECK_BACKEND:-cuda}" --models "${GPU_CHECK_MODELS:-demo,r50}" --r50 "$STASH/models/r50.onnx" \
    --precisions "${GPU_CHECK_PRECISIONS:-fp32,fp16}" --batches "${GPU_CHECK_BATCHES:-1,4,8,16}" \
    --scene-size "${GPU_CHECK_SCENE_SIZE:-4096}" --probe-backends "${GPU_CHECK_PROBES:-cuda,tensorrt}" --budget-s "$budget"
}

case "$MODE" in
  stash)
    stash; rc=$?; (( rc == 3 )) && exit 0; exit $rc ;;  # pieces still to come is no failure
  run)
    : "${OUT:?OUT must name the folder for the results}"
    mkdir -p "$OUT"
    {
      say "start $(date -u +%FT%TZ) on $(hostname); $(nvidia-smi -L 2>/dev/null || echo 'no nvidia-smi')"
      stash || { say "pieces missing: send them first (see the header)"; exit 3; }
      unpack || { say "unpack failed"; exit 4; }
      export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
      cuda_paths
      build_minescan || { say "minescan build failed (build.log)"; exit 5; }
      measure; rc=$?
      say "done in $((SECONDS - STARTED)) s, exit $rc"
      exit $rc
    } 2>&1 | tee "$OUT/gpu_check.log"
    exit "${PIPESTATUS[0]}" ;;
  *)
    sed -n '2,40p' "$0"; exit 2 ;;
esac
