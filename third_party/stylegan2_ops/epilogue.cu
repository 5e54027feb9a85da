// The epilogue of a modulated convolution in one pass: demodulation scale, noise, bias, activation, gain and
// clamp (the math is epilogue_element in sgd_math.h; see EpilogueParams in sgd_ops.h). Replaces the separate
// addcmul / add and bias_act passes over the convolution output. Written for stylegan_disentangle from the
// formulas in stylegan_disentangle/ops/modulated_conv.py and bias_act.py.
#include "sgd_types.cuh"

namespace sgd_ops {
namespace {

template <typename T, typename Index>
__global__ void __launch_bounds__(256) epilogue_kernel(EpilogueParams p) {
  using E = Elem<T>;
  using A = typename E::Acc;
  const T* x = static_cast<const T*>(p.x);
  const A* scale = static_cast<const A*>(p.scale);
  const A* add = static_cast<const A*>(p.add);
  const A* b = static_cast<const A*>(p.b);
  T* out = static_cast<T*>(p.out);
  const BiasActParams act = epilogue_activation(p);
  const Index numel = static_cast<Index>(p.numel);
  for (Index i = Index(blockIdx.x) * blockDim.x + threadIdx.x; i < numel; i += Index(gridDim.x) * blockDim.x) {
    E::store(out + i, epilogue_element<A, Index>(p, act, i, E::load(x + i), scale, add, b));
  }
}

template <typename T>
int launch_typed(const EpilogueParams& p, cudaStream_t stream) {
  constexpr int kThreads = 256;
  const unsigned int blocks = grid_for(p.numel, kThreads);
  if (p.numel < (int64_t(1) << 31)) {
    epilogue_kernel<T, uint32_t><<<blocks, kThreads, 0, stream>>>(p);
  } else {
    epilogue_kernel<T, int64_t><<<blocks, kThreads, 0, stream>>>(p);
  }
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

int launch_epilogue(const EpilogueParams& p, DType dtype, void* stream) {
  if (p.numel == 0) return 0;
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
