#!/usr/bin/env bash
# Installs the CUDA toolkit pieces mlcli's `--features cuda` build needs (nvcc, headers, cuBLAS,
# cuRAND, NVRTC, the runtime) from NVIDIA's PyPI wheels, on a Linux x86-64 machine with no GPU and
# no system CUDA, and writes `cuda-env.sh` to source before building. CI uses it to keep the CUDA
# build compiling; developers use it to build the binary they carry to a GPU machine.
#
# Usage: scripts/cuda/install-toolkit.sh [DIR]   (default $MLCLI_CUDA_TOOLKIT or ~/.cache/mlcli/cuda-toolkit)
# Then:  source DIR/cuda-env.sh && CARGO_TARGET_DIR=target/cuda cargo build --release --features cuda
#
# A second run with the wheels already in DIR/wheels installs nothing new from the network.
set -euo pipefail
work=${1:-${MLCLI_CUDA_TOOLKIT:-$HOME/.cache/mlcli/cuda-toolkit}}
pip_dir=$work/cuda-pip
cu=$pip_dir/nvidia/cu13
mkdir -p "$work/wheels"

# 1. The CUDA 13.0.x wheels (the pins of PyPI's cuda-toolkit==13.0.2). They must stay on 13.0.x:
#    a 13.0 driver (the 580 series) refuses PTX from a newer nvcc (CUDA_ERROR_UNSUPPORTED_PTX_VERSION).
#    nvcc: nvcc, ptxas, fatbinary; nvvm: cicc and libdevice (nvcc needs them); crt: host headers;
#    runtime: cuda.h, cuda_runtime*.h, libcudart; cccl: nv/target, cub (cuda_fp16.h needs them);
#    cublas, curand, nvrtc: the libraries cudarc links.
pkgs="nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
      nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cublas==13.1.0.3
      nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88"
wheel() { local n=${1%%==*} v=${1##*==}; ls "$work"/wheels/"${n//-/_}"-"$v"-*.whl 2>/dev/null | head -1; }
missing=""
for p in $pkgs; do [ -n "$(wheel "$p")" ] || missing="$missing $p"; done
if [ -n "$missing" ]; then
  # shellcheck disable=SC2086
  python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$work/wheels" $missing
fi
if [ ! -x "$cu/bin/nvcc" ]; then
  # shellcheck disable=SC2046
  python3 -m pip install -q --disable-pip-version-check --no-deps --no-index --upgrade \
    --target "$pip_dir" $(for p in $pkgs; do wheel "$p"; done)
fi

# 2. The wheels ship only libX.so.N; the linker's -lX needs libX.so.
cd "$cu/lib"
for l in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13; do
  ln -sf "$l" "${l%.so.*}.so"
done

# 3. A link stub for the driver library (libcuda comes with the driver on the GPU machine and is in
#    no wheel): every driver-API name that cuda.h declares, with the soname libcuda.so.1, so the
#    binary asks for the real library at run time. Never put lib/stubs on LD_LIBRARY_PATH.
mkdir -p "$cu/lib/stubs"
{
  grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' "$cu/include/cuda.h" | tr -d ' (\t'
  grep -oE '#define cu[A-Za-z0-9_]+ +cu[A-Za-z0-9_]+' "$cu/include/cuda.h" | awk '{print $3}'
} | sort -u | awk '{printf "int %s(void){return 999;}\n", $1}' >"$cu/lib/stubs/cuda_stub.c"
cc -shared -fPIC -O0 -Wl,-soname,libcuda.so.1 -o "$cu/lib/stubs/libcuda.so" "$cu/lib/stubs/cuda_stub.c"

# 4. The environment for builds. No GPU here, so the compute capability is named (90: H100/H200).
cat >"$work/cuda-env.sh" <<ENV
export CUDA_ROOT=$cu CUDA_PATH=$cu CUDA_HOME=$cu CUDA_TOOLKIT_ROOT_DIR=$cu
export PATH=$cu/bin:\$PATH
export NVCC=$cu/bin/nvcc
export CUDA_COMPUTE_CAP=\${CUDA_COMPUTE_CAP:-90}
export CUDARC_CUDA_VERSION=13000
export LIBRARY_PATH=$cu/lib:$cu/lib/stubs\${LIBRARY_PATH:+:\$LIBRARY_PATH}
ENV
echo "cuda toolkit ready: source $work/cuda-env.sh"
