#!/usr/bin/env bash
# Compile every .cu / .cpp in third_party/ to object files (no link, nothing runs) with the installed nvcc against
# torch's headers, so a syntax or API error in the CUDA ops fails CI on machines without a GPU.
#
#   scripts/check_cuda_compile.sh            # uses $PYTHON, else .venv/bin/python, else python3
#
# Skips (exit 0) with a message when nvcc is not on PATH. Each translation unit is one nvcc call covering both
# architectures (sm_90 and sm_80), and the units compile in parallel. The flags mirror what
# torch.utils.cpp_extension.load uses for our extension (see stylegan_disentangle/ops/cuda_build.py), plus
# -std=c++17 (the oldest standard the sources must keep building with).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src_root="$repo/third_party"

if ! command -v nvcc >/dev/null 2>&1; then
  echo "check_cuda_compile: nvcc not on PATH; skipping the CUDA compile check"
  exit 0
fi

python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$repo/.venv/bin/python" ]]; then python="$repo/.venv/bin/python"; else python="python3"; fi
fi

# torch's include dirs, Python's include dir and torch's C++ ABI flag, one per line.
mapfile -t info < <("$python" - <<'EOF'
import sysconfig
import torch
from torch.utils.cpp_extension import include_paths
print(" ".join(include_paths()))
print(sysconfig.get_path("include"))
print(int(torch._C._GLIBCXX_USE_CXX11_ABI))
EOF
)
read -r -a torch_includes <<< "${info[0]}"
python_include="${info[1]}"
cxx11_abi="${info[2]}"
cuda_include="$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")/include"

includes=()
for dir in "${torch_includes[@]}" "$python_include"; do includes+=(-isystem "$dir"); done
defines=(-DTORCH_EXTENSION_NAME=stylegan2_ops -DTORCH_API_INCLUDE_EXTENSION_H "-D_GLIBCXX_USE_CXX11_ABI=$cxx11_abi")
# torch's COMMON_NVCC_FLAGS, then our EXTRA_CUDA_CFLAGS (-O3 --expt-relaxed-constexpr).
nvcc_flags=(-std=c++17 -O3 --expt-relaxed-constexpr
  -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__
  -D__CUDA_NO_HALF2_OPERATORS__ --compiler-options -fPIC,-Wall
  -gencode arch=compute_90,code=sm_90 -gencode arch=compute_80,code=sm_80)
# Host C++ units are compiled the way torch compiles them: by the host compiler, plus CUDA's include dir.
cxx="${CXX:-c++}"
cxx_flags=(-std=c++17 -O3 -fPIC -Wall -isystem "$cuda_include")

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
mapfile -t sources < <(find "$src_root" -type f \( -name '*.cu' -o -name '*.cpp' \) | sort)
if [[ ${#sources[@]} -eq 0 ]]; then
  echo "check_cuda_compile: no .cu/.cpp files under $src_root" >&2
  exit 1
fi

echo "check_cuda_compile: $(nvcc --version | tail -n 1); ${#sources[@]} translation units; sm_90 + sm_80"
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
seconds() { printf '%d.%01d' $(( $1 / 1000 )) $(( ($1 % 1000) / 100 )); }
start=$(date +%s%N)
pids=()
for source in "${sources[@]}"; do
  rel="${source#"$repo"/}"
  obj="$out/$(echo "$rel" | tr '/' '_').o"
  log="$obj.log"
  if [[ "$source" == *.cu ]]; then
    cmd=(nvcc -c "$source" -o "$obj" "${nvcc_flags[@]}" "${defines[@]}" "${includes[@]}")
  else
    cmd=("$cxx" -c "$source" -o "$obj" "${cxx_flags[@]}" "${defines[@]}" "${includes[@]}")
  fi
  ( unit_start=$(date +%s%N)
    if "${cmd[@]}" >"$log" 2>&1; then
      printf '  ok    %-45s %5s s\n' "$rel" "$(seconds "$(ms_since "$unit_start")")"
      [[ -s "$log" ]] && sed 's/^/        /' "$log"
      exit 0
    fi
    printf '  FAIL  %s\n' "$rel"; sed 's/^/        /' "$log"; exit 1 ) &
  pids+=($!)
done

failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
elapsed="$(seconds "$(ms_since "$start")")"
if [[ $failed -ne 0 ]]; then
  echo "check_cuda_compile: FAILED after $elapsed s" >&2
  exit 1
fi
echo "check_cuda_compile: all units compiled in $elapsed s"
