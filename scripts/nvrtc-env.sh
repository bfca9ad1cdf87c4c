# Sourced by .ci/run and scripts/gpu-check.sh: installs NVRTC and ptxas from PyPI, pinned, into
# .cuda/ inside the repository (never system-wide), and exports LD_LIBRARY_PATH and WHORL_PTXAS.
# With them, build.rs embeds the kernels as PTX and tests/nvrtc.rs checks every kernel.
cuda_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.cuda/pip"
if [ ! -f "$cuda_dir/nvidia/cuda_nvrtc/lib/libnvrtc.so.12" ] || [ ! -x "$cuda_dir/nvidia/cuda_nvcc/bin/ptxas" ]; then
    python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$cuda_dir" \
        nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-cuda-nvcc-cu12==12.9.86
fi
export LD_LIBRARY_PATH="$cuda_dir/nvidia/cuda_nvrtc/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export WHORL_PTXAS="$cuda_dir/nvidia/cuda_nvcc/bin/ptxas"
