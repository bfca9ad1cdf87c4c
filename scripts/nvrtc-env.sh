# Sourced by .ci/run and scripts/gpu-check.sh: installs NVRTC, ptxas and nvdisasm from PyPI,
# pinned, into .cuda/ inside the repository (never system-wide), and exports LD_LIBRARY_PATH,
# WHORL_PTXAS and WHORL_NVDISASM. With them, build.rs embeds the kernels as PTX,
# tests/nvrtc.rs checks every kernel and tests/sass.rs reads the tensor-core kernels' machine code.
cuda_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.cuda/pip"
if [ ! -f "$cuda_dir/nvidia/cuda_nvrtc/lib/libnvrtc.so.12" ] || [ ! -x "$cuda_dir/nvidia/cuda_nvcc/bin/ptxas" ]; then
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$cuda_dir" \
        nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-cuda-nvcc-cu12==12.9.86
fi
# nvdisasm has its own folder: pip --target would replace the nvidia/ folder it shares with the above.
disasm_dir="$(dirname "$cuda_dir")/nvdisasm"
if ! ls "$disasm_dir"/nvidia/*/bin/nvdisasm >/dev/null 2>&1; then
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$disasm_dir" \
        nvidia-cuda-nvdisasm==13.5.37
fi
export LD_LIBRARY_PATH="$cuda_dir/nvidia/cuda_nvrtc/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export WHORL_PTXAS="$cuda_dir/nvidia/cuda_nvcc/bin/ptxas"
WHORL_NVDISASM="$(ls "$disasm_dir"/nvidia/*/bin/nvdisasm 2>/dev/null | head -n 1)"
export WHORL_NVDISASM
