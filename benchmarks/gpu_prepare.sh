#!/usr/bin/env bash
# Prepare, HERE (a machine with the package registry), what benchmarks/gpu_check.sh needs on the GPU machine,
# which has no registry and takes at most 64 MiB of our working tree per device call.
#
#   bash benchmarks/gpu_prepare.sh [R50_ONNX]        # R50_ONNX: the ResNet-50 fixture detector (default /tmp/r50/r50.onnx)
#
# It downloads the cp312 manylinux wheels the GPU machine lacks (with --no-deps: each one's own needs are
# either listed here or already there, see "Python packages already there" in the device notes), packs them
# with the ResNet-50 fixture into one tar, splits that into pieces of at most GPU_PIECE_MIB MiB (default 50:
# the working tree itself, ~8 MB, travels with every call) and writes a manifest of sha256 sums:
#
#   benchmarks/.gpu-bundle/wheels/            the downloaded wheels (kept, a second run downloads nothing)
#   benchmarks/.gpu-bundle/pieces/bundle.tar.NN
#   benchmarks/.gpu-bundle/manifest.sha256    sha256sum lines: every piece, then bundle.tar whole
#   benchmarks/.gpu-bundle/calls.txt          the device calls to make, in order (see gpu_check.sh's header)
#
# benchmarks/.gpu-bundle/ is ignored by git (.gitignore), so it travels only where a call's `carry` names it.
#
# What is downloaded, and why (the machine has numpy 2, onnx, onnxruntime 1.30 CPU, attrs, certifi, click,
# packaging, pathspec, pyparsing, python-dateutil, requests, tqdm, CMake, ninja, nvcc 13, CUDA 13 libraries):
#   onnxruntime-gpu==1.31.1   the CUDA provider (a CUDA 13 build; its cuda/cudnn extras are the nvidia-*
#                             wheels already there, so --no-deps)
#   rasterio pyogrio shapely pyproj affine cligj click-plugins   reading scenes and writing results
#   onnx-graphsurgeon         imported by minescan.export.variants (the FP16 variant is built there)
#   scikit-build-core nanobind   building minescan's native module (CMake + nanobind) without a registry
# pystac and pystac-client are not needed: `minescan bench` on a GeoTIFF never imports them.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUNDLE="$ROOT/benchmarks/.gpu-bundle"
R50="${1:-/tmp/r50/r50.onnx}"
PIECE_MIB="${GPU_PIECE_MIB:-50}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"

WHEELS=(
  "onnxruntime-gpu==1.31.1"
  "rasterio==1.4.4" "pyogrio==0.13.0" "shapely==2.2.0" "pyproj==3.7.2"
  "affine==3.0.1" "cligj==0.7.2" "click-plugins==1.1.1.2"
  "onnx-graphsurgeon==0.6.1"
  "scikit-build-core==1.1.2" "nanobind==3.1.0"
)

if [[ ! -f "$R50" ]]; then
  echo "gpu_prepare: the ResNet-50 fixture $R50 is missing (build it with testkit/fixture_model.py, see benchmarks/memory_defaults.md)" >&2
  exit 2
fi

mkdir -p "$BUNDLE/wheels"
rm -rf "$BUNDLE/pieces" "$BUNDLE/stage"
mkdir -p "$BUNDLE/pieces" "$BUNDLE/stage/wheels" "$BUNDLE/stage/models"

if [[ "${GPU_PREPARE_SKIP_DOWNLOAD:-0}" != 1 ]]; then
  # One platform list for every wheel; pip matches manylinux_2_N exactly, so the common Ns are all named.
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
    -d "$BUNDLE/wheels" "${WHEELS[@]}"
fi

# Exactly one wheel per name travels (two versions of one stop pip's whole install there).
for spec in "${WHEELS[@]}"; do
  name="${spec%%==*}"; version="${spec##*==}"
  stem="$(echo "$name" | tr '-' '_')"
  found=( "$BUNDLE"/wheels/"$stem"-"$version"-*.whl )
  if [[ ! -f "${found[0]}" ]]; then
    echo "gpu_prepare: no wheel for $spec in $BUNDLE/wheels" >&2
    exit 3
  fi
  ln "${found[0]}" "$BUNDLE/stage/wheels/" 2>/dev/null || cp "${found[0]}" "$BUNDLE/stage/wheels/"
done
ln "$R50" "$BUNDLE/stage/models/r50.onnx" 2>/dev/null || cp "$R50" "$BUNDLE/stage/models/r50.onnx"
(cd "$BUNDLE/stage" && sha256sum wheels/* models/* > CONTENTS.sha256)

# One uncompressed tar (wheels and float weights barely compress), split into pieces.
tar -C "$BUNDLE/stage" -cf "$BUNDLE/bundle.tar" CONTENTS.sha256 wheels models
split --bytes="${PIECE_MIB}M" --numeric-suffixes=0 --suffix-length=2 "$BUNDLE/bundle.tar" "$BUNDLE/pieces/bundle.tar."
(cd "$BUNDLE/pieces" && sha256sum bundle.tar.* > "$BUNDLE/manifest.sha256")
(cd "$BUNDLE" && sha256sum bundle.tar >> manifest.sha256)
rm -rf "$BUNDLE/stage" "$BUNDLE/bundle.tar"

# The device calls, in order: each must follow the one before within the machine's warm time (30 s); the last
# piece travels with the measuring call.
pieces=( "$BUNDLE"/pieces/bundle.tar.* )
{
  for piece in "${pieces[@]:0:${#pieces[@]}-1}"; do
    echo "run(command=\"bash benchmarks/gpu_check.sh stash\", carry=[\"benchmarks/.gpu-bundle/manifest.sha256\", \"${piece#"$ROOT/"}\"], timeout_s=60)"
  done
  echo "run(command=\"bash benchmarks/gpu_check.sh run\", carry=[\"benchmarks/.gpu-bundle/manifest.sha256\", \"${pieces[-1]#"$ROOT/"}\"], timeout_s=540)"
} > "$BUNDLE/calls.txt"

echo "gpu_prepare: $(ls "$BUNDLE"/pieces | wc -l) pieces of at most $PIECE_MIB MiB in $BUNDLE/pieces"
du -b "$BUNDLE"/pieces/* | awk '{printf "  %s %.1f MiB\n", $2, $1 / 1048576}'
echo "gpu_prepare: device calls, in order (also in $BUNDLE/calls.txt):"
cat "$BUNDLE/calls.txt"
