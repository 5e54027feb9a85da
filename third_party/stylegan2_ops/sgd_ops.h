// Plain-C++ interface between the torch binding (ops.cpp) and the CUDA kernels (*.cu).
//
// Written for stylegan_disentangle from the math in stylegan_disentangle/ops/bias_act.py and upfirdn2d.py.
// This header includes neither torch nor CUDA headers, so the .cu files compile quickly and without torch, and
// ops.cpp compiles against torch's headers alone (no CUDA toolkit headers needed).
#pragma once

#include <cstdint>

namespace sgd_ops {

// Element types the kernels are instantiated for; arithmetic is in float (double for kFloat64).
enum class DType : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

// Activation ids, equal to Activation.cuda_id in stylegan_disentangle/ops/bias_act.py.
enum Act : int {
  kLinear = 1, kRelu = 2, kLrelu = 3, kTanh = 4, kSigmoid = 5, kElu = 6, kSelu = 7, kSoftplus = 8, kSwish = 9
};

// bias_act over a tensor stored densely (any permutation of dims, e.g. NCHW or NHWC), processed in memory order.
// With z = x + b[channel] and v = act(z) * gain:
//   grad_order 0:  out = clamp(v, -clamp, clamp)                    (clamp < 0: no clamping)
//   grad_order 1:  out = g * gain * act'(z)  * [|v| <= clamp]       (d out0 / d z, times the incoming gradient g)
//   grad_order 2:  out = g * gain * act''(z) * [|v| <= clamp]       (used by the double backward)
// channel of the element at memory offset i: (i / bias_stride) % bias_size.
struct BiasActParams {
  const void* x = nullptr;  // [numel], dtype
  const void* b = nullptr;  // [bias_size], dtype, or nullptr for no bias
  const void* g = nullptr;  // [numel], dtype, same layout as x; required when grad_order > 0
  void* out = nullptr;      // [numel], dtype, same layout as x
  int64_t numel = 0;
  int64_t bias_stride = 1;
  int64_t bias_size = 1;
  int act = kLinear;
  int grad_order = 0;
  double alpha = 0.0;
  double gain = 1.0;
  double clamp = -1.0;
};

// The epilogue of a modulated convolution, in one pass over x [N, C, H, W] stored densely (any dim order):
//   z = x[n, c, h, w] * scale[n, c] + add[n, h, w] + b[c];   out = clamp(act(z) * gain, -clamp, clamp)
// scale (the demodulation coefficients), add (the noise, broadcast over channels) and b are optional and stored in
// the accumulation type (float; double for kFloat64); the sum is rounded to x's dtype once. Coordinates of the
// element at memory offset i: (i / sx_d) % size_d for each dim d. Forward only (inference).
struct EpilogueParams {
  const void* x = nullptr;      // [numel], dtype
  const void* scale = nullptr;  // [n, c] contiguous, accumulation type, or nullptr
  const void* add = nullptr;    // element (n, h, w) at n * sa_n + h * sa_h + w * sa_w, accumulation type, or nullptr
  const void* b = nullptr;      // [c], accumulation type, or nullptr
  void* out = nullptr;          // [numel], dtype, x's layout
  int64_t numel = 0;
  int64_t n = 1, c = 1, h = 1, w = 1;
  int64_t sx_n = 1, sx_c = 1, sx_h = 1, sx_w = 1;  // strides of x (and out), in elements; >= 1
  int64_t sa_n = 0, sa_h = 0, sa_w = 0;
  int act = kLinear;
  double alpha = 0.0;
  double gain = 1.0;
  double clamp = -1.0;
};

// upfirdn2d for x [N, C, H, W] with arbitrary strides, writing y [N, C, out_h, out_w] with arbitrary strides.
// For every output pixel:
//   y[n, c, oy, ox] = gain * sum_{i, j} w[i, j] * u[n, c, oy * down_y + i - pad_y0, ox * down_x + j - pad_x0]
// where u is x with up-1 zeros inserted after every pixel (u[p, q] = x[p / up_y, q / up_x] when both divide,
// else 0; zero outside the image) and w[i, j] = f[i, j] if flip_filter else f[fh - 1 - i, fw - 1 - j].
// Only the taps that land on a real input pixel are visited: fh * fw / (up_x * up_y) per output.
struct Upfirdn2dParams {
  const void* x = nullptr;
  const float* f = nullptr;  // [f_h, f_w] float32, contiguous
  void* y = nullptr;
  int n = 0, c = 0, in_h = 0, in_w = 0, out_h = 0, out_w = 0;
  int64_t sx_n = 0, sx_c = 0, sx_h = 0, sx_w = 0;  // strides of x, in elements
  int64_t sy_n = 0, sy_c = 0, sy_h = 0, sy_w = 0;  // strides of y, in elements
  int up_x = 1, up_y = 1, down_x = 1, down_y = 1;
  int pad_x0 = 0, pad_y0 = 0;
  int f_h = 1, f_w = 1;
  bool flip_filter = false;
  bool channels_last = false;  // thread order: channel fastest (NHWC outputs) instead of x fastest
  double gain = 1.0;
};

// Largest filter (taps) the upfirdn2d kernel keeps in shared memory; larger filters are rejected by ops.cpp.
constexpr int kMaxFilterTaps = 8192;

// Launchers: return 0 on success, else a CUDA error code (see error_string). `stream` is a cudaStream_t.
int launch_bias_act(const BiasActParams& p, DType dtype, void* stream);
int launch_upfirdn2d(const Upfirdn2dParams& p, DType dtype, void* stream);
int launch_epilogue(const EpilogueParams& p, DType dtype, void* stream);
const char* error_string(int code);

}  // namespace sgd_ops
