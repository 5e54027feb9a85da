// Element-type helpers shared by the kernels: load/store between the storage type and the accumulation type
// (float for fp32/fp16/bf16, double for fp64). Only explicit conversion intrinsics are used, so the code builds
// with torch's -D__CUDA_NO_HALF_CONVERSIONS__ / -D__CUDA_NO_BFLOAT16_CONVERSIONS__ flags.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "sgd_math.h"

namespace sgd_ops {

template <typename T>
struct Elem;

template <>
struct Elem<float> {
  using Acc = float;
  static __device__ __forceinline__ Acc load(const float* p) { return __ldg(p); }
  static __device__ __forceinline__ void store(float* p, Acc v) { *p = v; }
};

template <>
struct Elem<double> {
  using Acc = double;
  static __device__ __forceinline__ Acc load(const double* p) { return __ldg(p); }
  static __device__ __forceinline__ void store(double* p, Acc v) { *p = v; }
};

template <>
struct Elem<__half> {
  using Acc = float;
  static __device__ __forceinline__ Acc load(const __half* p) { return __half2float(*p); }
  static __device__ __forceinline__ void store(__half* p, Acc v) { *p = __float2half_rn(v); }
};

template <>
struct Elem<__nv_bfloat16> {
  using Acc = float;
  static __device__ __forceinline__ Acc load(const __nv_bfloat16* p) { return __bfloat162float(*p); }
  static __device__ __forceinline__ void store(__nv_bfloat16* p, Acc v) { *p = __float2bfloat16_rn(v); }
};

// Reads element `offset` of a tensor of T as the accumulation type (the `load` of upfirdn2d_pixel).
template <typename T>
struct DeviceLoad {
  const T* base;
  __device__ __forceinline__ typename Elem<T>::Acc operator()(int64_t offset) const {
    return Elem<T>::load(base + offset);
  }
};

// Grid size for a grid-stride loop over `work` items with `threads` per block.
inline unsigned int grid_for(int64_t work, int threads) {
  const int64_t max_blocks = int64_t(1) << 20;
  int64_t blocks = (work + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  return static_cast<unsigned int>(blocks < max_blocks ? blocks : max_blocks);
}

}  // namespace sgd_ops
