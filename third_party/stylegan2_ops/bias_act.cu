// bias_act: y = clamp(act(x + b) * gain, -clamp, clamp), or its first / second derivative times an incoming
// gradient, in one pass over memory (the math is bias_act_element in sgd_math.h). Written for stylegan_disentangle
// from the formulas in stylegan_disentangle/ops/bias_act.py.
#include "sgd_types.cuh"

namespace sgd_ops {
namespace {

template <typename T, typename Index>
__global__ void __launch_bounds__(256) bias_act_kernel(BiasActParams p) {
  using E = Elem<T>;
  using A = typename E::Acc;
  const T* x = static_cast<const T*>(p.x);
  const T* b = static_cast<const T*>(p.b);
  const T* g = static_cast<const T*>(p.g);
  T* out = static_cast<T*>(p.out);
  const Index numel = static_cast<Index>(p.numel);
  const Index bias_stride = static_cast<Index>(p.bias_stride);
  const Index bias_size = static_cast<Index>(p.bias_size);

  for (Index i = Index(blockIdx.x) * blockDim.x + threadIdx.x; i < numel; i += Index(gridDim.x) * blockDim.x) {
    A z = E::load(x + i);
    if (b != nullptr) z += E::load(b + bias_index(i, bias_stride, bias_size));
    const A grad = g != nullptr ? E::load(g + i) : A(0);
    E::store(out + i, bias_act_element<A>(p, z, grad));
  }
}

template <typename T>
int launch_typed(const BiasActParams& p, cudaStream_t stream) {
  constexpr int kThreads = 256;
  const unsigned int blocks = grid_for(p.numel, kThreads);
  if (p.numel < (int64_t(1) << 31)) {
    bias_act_kernel<T, uint32_t><<<blocks, kThreads, 0, stream>>>(p);
  } else {
    bias_act_kernel<T, int64_t><<<blocks, kThreads, 0, stream>>>(p);
  }
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

int launch_bias_act(const BiasActParams& p, DType dtype, void* stream) {
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

const char* error_string(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }

}  // namespace sgd_ops
