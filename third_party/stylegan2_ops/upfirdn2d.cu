// upfirdn2d: zero-insertion upsampling, padding / cropping, FIR filtering and decimation in one pass, without
// materialising the upsampled or padded image. Written for stylegan_disentangle from the definition in
// stylegan_disentangle/ops/upfirdn2d.py (see Upfirdn2dParams in sgd_ops.h for the exact formula).
//
// One thread computes one output pixel (upfirdn2d_pixel in sgd_math.h) and visits only the filter taps that fall on
// real input pixels: along y those are the taps i with (oy * down_y + i - pad_y0) divisible by up_y and landing
// inside the image, i.e. every up_y-th tap from the first such i. The filter is staged in shared memory, flipped.
// The backward pass is the same kernel with up and down swapped, the filter flipped and the padding adjusted;
// see stylegan_disentangle/ops/cuda_kernels.py.
#include "sgd_types.cuh"

namespace sgd_ops {
namespace {

template <typename T, typename Index>
__global__ void __launch_bounds__(256) upfirdn2d_kernel(Upfirdn2dParams p) {
  using E = Elem<T>;
  using A = typename E::Acc;
  extern __shared__ float w_shared[];

  const int taps = p.f_h * p.f_w;
  for (int t = threadIdx.x; t < taps; t += blockDim.x) w_shared[t] = upfirdn2d_tap(p, t);
  __syncthreads();

  const DeviceLoad<T> load{static_cast<const T*>(p.x)};
  T* y = static_cast<T*>(p.y);
  const Index c = p.c, out_h = p.out_h, out_w = p.out_w;
  const Index total = Index(p.n) * c * out_h * out_w;

  for (Index idx = Index(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += Index(gridDim.x) * blockDim.x) {
    Index rest = idx;
    int n, ch, oy, ox;
    if (p.channels_last) {  // consecutive threads: consecutive channels (coalesced for NHWC)
      ch = int(rest % c); rest /= c;
      ox = int(rest % out_w); rest /= out_w;
      oy = int(rest % out_h); n = int(rest / out_h);
    } else {  // consecutive threads: consecutive x (coalesced for NCHW)
      ox = int(rest % out_w); rest /= out_w;
      oy = int(rest % out_h); rest /= out_h;
      ch = int(rest % c); n = int(rest / c);
    }
    E::store(y + upfirdn2d_out_offset(p, n, ch, oy, ox), upfirdn2d_pixel<A>(p, w_shared, n, ch, oy, ox, load));
  }
}

template <typename T>
int launch_typed(const Upfirdn2dParams& p, cudaStream_t stream) {
  constexpr int kThreads = 256;
  const int64_t total = int64_t(p.n) * p.c * p.out_h * p.out_w;
  const unsigned int blocks = grid_for(total, kThreads);
  const size_t shared_bytes = size_t(p.f_h) * p.f_w * sizeof(float);
  if (total < (int64_t(1) << 31)) {
    upfirdn2d_kernel<T, uint32_t><<<blocks, kThreads, shared_bytes, stream>>>(p);
  } else {
    upfirdn2d_kernel<T, int64_t><<<blocks, kThreads, shared_bytes, stream>>>(p);
  }
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

int launch_upfirdn2d(const Upfirdn2dParams& p, DType dtype, void* stream) {
  if (int64_t(p.n) * p.c * p.out_h * p.out_w == 0) return 0;
  if (p.f_h * p.f_w > kMaxFilterTaps || p.up_x < 1 || p.up_y < 1 || p.down_x < 1 || p.down_y < 1) {
    return static_cast<int>(cudaErrorInvalidValue);
  }
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case DType::kFloat32: return launch_typed<float>(p, s);
    case DType::kFloat64: return launch_typed<double>(p, s);
    case DType::kFloat16: return launch_typed<__half>(p, s);
    case DType::kBFloat16: return launch_typed<__nv_bfloat16>(p, s);
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

}  // namespace sgd_ops
