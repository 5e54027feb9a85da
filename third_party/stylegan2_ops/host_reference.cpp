// A host (CPU) build of the kernels' per-element math, for tests on machines without a GPU.
//
// Not part of the CUDA extension. tests/test_cuda_ops.py compiles this file alone into a small shared library
// (plain C++, no torch, no CUDA) and calls it through ctypes with the same arguments the CUDA launchers get, so the
// arithmetic and index logic of bias_act_element / upfirdn2d_pixel (sgd_math.h), and the Python autograd wrappers
// around them, are checked against the PyTorch reference on CPU. Only float32 and float64 storage are provided.
// With -DSGD_HOST_LAUNCHERS it also defines the launchers of sgd_ops.h, so that ops.cpp itself can be built for CPU
// tensors (see the seams at the top of ops.cpp).
#include <cstdint>
#include <vector>

#include "sgd_math.h"

namespace {

template <typename T>
void bias_act_host(const sgd_ops::BiasActParams& p) {
  using A = T;
  const T* x = static_cast<const T*>(p.x);
  const T* b = static_cast<const T*>(p.b);
  const T* g = static_cast<const T*>(p.g);
  T* out = static_cast<T*>(p.out);
  for (int64_t i = 0; i < p.numel; ++i) {
    A z = x[i];
    if (b != nullptr) z += b[sgd_ops::bias_index<int64_t>(i, p.bias_stride, p.bias_size)];
    out[i] = sgd_ops::bias_act_element<A>(p, z, g != nullptr ? A(g[i]) : A(0));
  }
}

template <typename T>
struct HostLoad {
  const T* base;
  T operator()(int64_t offset) const { return base[offset]; }
};

template <typename T>
void upfirdn2d_host(const sgd_ops::Upfirdn2dParams& p) {
  std::vector<float> w(static_cast<size_t>(p.f_h) * p.f_w);
  for (int t = 0; t < p.f_h * p.f_w; ++t) w[t] = sgd_ops::upfirdn2d_tap(p, t);
  const HostLoad<T> load{static_cast<const T*>(p.x)};
  T* y = static_cast<T*>(p.y);
  for (int n = 0; n < p.n; ++n)
    for (int ch = 0; ch < p.c; ++ch)
      for (int oy = 0; oy < p.out_h; ++oy)
        for (int ox = 0; ox < p.out_w; ++ox)
          y[sgd_ops::upfirdn2d_out_offset(p, n, ch, oy, ox)] =
              sgd_ops::upfirdn2d_pixel<T>(p, w.data(), n, ch, oy, ox, load);
}

template <typename T>
void epilogue_host(const sgd_ops::EpilogueParams& p) {
  const T* x = static_cast<const T*>(p.x);
  T* out = static_cast<T*>(p.out);
  const sgd_ops::BiasActParams act = sgd_ops::epilogue_activation(p);
  for (int64_t i = 0; i < p.numel; ++i) {
    out[i] = sgd_ops::epilogue_element<T, int64_t>(p, act, i, x[i], static_cast<const T*>(p.scale),
                                                   static_cast<const T*>(p.add), static_cast<const T*>(p.b));
  }
}

}  // namespace

extern "C" {

// dtype: 0 = float32, 1 = float64. Returns 0 on success, 1 on an unsupported dtype.
int sgd_host_bias_act(int dtype, const void* x, const void* b, const void* g, void* out, int64_t numel,
                      int64_t bias_stride, int64_t bias_size, int act, int grad_order, double alpha, double gain,
                      double clamp) {
  sgd_ops::BiasActParams p;
  p.x = x; p.b = b; p.g = g; p.out = out;
  p.numel = numel; p.bias_stride = bias_stride; p.bias_size = bias_size;
  p.act = act; p.grad_order = grad_order; p.alpha = alpha; p.gain = gain; p.clamp = clamp;
  if (dtype == 0) { bias_act_host<float>(p); return 0; }
  if (dtype == 1) { bias_act_host<double>(p); return 0; }
  return 1;
}

// sizes: n, c, in_h, in_w, out_h, out_w; sx, sy: element strides (n, c, h, w); resample: up_x, up_y, down_x,
// down_y, pad_x0, pad_y0; f: [f_h, f_w] float32 contiguous.
int sgd_host_upfirdn2d(int dtype, const void* x, const float* f, void* y, const int64_t* sizes, const int64_t* sx,
                       const int64_t* sy, const int64_t* resample, int f_h, int f_w, int flip_filter, double gain) {
  sgd_ops::Upfirdn2dParams p;
  p.x = x; p.f = f; p.y = y;
  p.n = int(sizes[0]); p.c = int(sizes[1]); p.in_h = int(sizes[2]); p.in_w = int(sizes[3]);
  p.out_h = int(sizes[4]); p.out_w = int(sizes[5]);
  p.sx_n = sx[0]; p.sx_c = sx[1]; p.sx_h = sx[2]; p.sx_w = sx[3];
  p.sy_n = sy[0]; p.sy_c = sy[1]; p.sy_h = sy[2]; p.sy_w = sy[3];
  p.up_x = int(resample[0]); p.up_y = int(resample[1]); p.down_x = int(resample[2]); p.down_y = int(resample[3]);
  p.pad_x0 = int(resample[4]); p.pad_y0 = int(resample[5]);
  p.f_h = f_h; p.f_w = f_w; p.flip_filter = flip_filter != 0; p.gain = gain;
  if (dtype == 0) { upfirdn2d_host<float>(p); return 0; }
  if (dtype == 1) { upfirdn2d_host<double>(p); return 0; }
  return 1;
}

// sizes: n, c, h, w; sx: x's element strides (n, c, h, w); sa: add's strides (n, h, w). scale/add/b may be null.
int sgd_host_epilogue(int dtype, const void* x, const void* scale, const void* add, const void* b, void* out,
                      int64_t numel, const int64_t* sizes, const int64_t* sx, const int64_t* sa, int act,
                      double alpha, double gain, double clamp) {
  sgd_ops::EpilogueParams p;
  p.x = x; p.scale = scale; p.add = add; p.b = b; p.out = out; p.numel = numel;
  p.n = sizes[0]; p.c = sizes[1]; p.h = sizes[2]; p.w = sizes[3];
  p.sx_n = sx[0]; p.sx_c = sx[1]; p.sx_h = sx[2]; p.sx_w = sx[3];
  p.sa_n = sa[0]; p.sa_h = sa[1]; p.sa_w = sa[2];
  p.act = act; p.alpha = alpha; p.gain = gain; p.clamp = clamp;
  if (dtype == 0) { epilogue_host<float>(p); return 0; }
  if (dtype == 1) { epilogue_host<double>(p); return 0; }
  return 1;
}

}  // extern "C"

#ifdef SGD_HOST_LAUNCHERS
namespace sgd_ops {

// Host stand-ins for the CUDA launchers: 0 on success, 1 for a dtype the host build does not provide.
int launch_bias_act(const BiasActParams& p, DType dtype, void* /*stream*/) {
  if (dtype == DType::kFloat32) { bias_act_host<float>(p); return 0; }
  if (dtype == DType::kFloat64) { bias_act_host<double>(p); return 0; }
  return 1;
}

int launch_upfirdn2d(const Upfirdn2dParams& p, DType dtype, void* /*stream*/) {
  if (dtype == DType::kFloat32) { upfirdn2d_host<float>(p); return 0; }
  if (dtype == DType::kFloat64) { upfirdn2d_host<double>(p); return 0; }
  return 1;
}

int launch_epilogue(const EpilogueParams& p, DType dtype, void* /*stream*/) {
  if (dtype == DType::kFloat32) { epilogue_host<float>(p); return 0; }
  if (dtype == DType::kFloat64) { epilogue_host<double>(p); return 0; }
  return 1;
}

const char* error_string(int code) { return code == 1 ? "dtype not provided by the host build" : "unknown error"; }

}  // namespace sgd_ops
#endif  // SGD_HOST_LAUNCHERS
