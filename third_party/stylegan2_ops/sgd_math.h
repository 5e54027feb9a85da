// The per-element math of the kernels, as __host__ __device__ functions with no CUDA or torch dependency.
//
// The CUDA kernels (bias_act.cu, upfirdn2d.cu) call these for every element; host_reference.cpp calls the very same
// functions in plain loops, so the tests can check the kernels' arithmetic and index logic against the PyTorch
// reference on a machine without a GPU. Written for stylegan_disentangle from the formulas in
// stylegan_disentangle/ops/bias_act.py and upfirdn2d.py.
#pragma once

#include <math.h>

#include <cstdint>

#include "sgd_ops.h"

#if defined(__CUDACC__)
#define SGD_HD __host__ __device__ __forceinline__
#else
#define SGD_HD inline
#endif

namespace sgd_ops {

SGD_HD float exp_acc(float v) { return expf(v); }
SGD_HD double exp_acc(double v) { return exp(v); }
SGD_HD float expm1_acc(float v) { return expm1f(v); }
SGD_HD double expm1_acc(double v) { return expm1(v); }
SGD_HD float log1p_acc(float v) { return log1pf(v); }
SGD_HD double log1p_acc(double v) { return log1p(v); }
SGD_HD float tanh_acc(float v) { return tanhf(v); }
SGD_HD double tanh_acc(double v) { return tanh(v); }

// ---------------------------------------------------------------------------------------------------------------
// bias_act. The activation derivatives follow torch's own backward formulas (relu'(0) = 0, lrelu'(0) = alpha,
// elu'(0) = 1, softplus with beta = 1 and threshold 20), so gradients agree with the reference's autograd.

template <typename A>
struct ActMath {
  static constexpr double kSeluScale = 1.0507009873554804934193349852946;
  static constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
  static constexpr double kSoftplusThreshold = 20.0;

  static SGD_HD A sigmoid(A z) { return A(1) / (A(1) + exp_acc(-z)); }

  // act(z); NaN propagates like torch's implementations.
  static SGD_HD A value(int act, A z, A alpha) {
    switch (act) {
      case kRelu: return z < A(0) ? A(0) : z;
      case kLrelu: return z < A(0) ? z * alpha : z;
      case kTanh: return tanh_acc(z);
      case kSigmoid: return sigmoid(z);
      case kElu: return z > A(0) ? z : expm1_acc(z);
      case kSelu: return A(kSeluScale) * (z > A(0) ? z : A(kSeluAlpha) * expm1_acc(z));
      case kSoftplus: return z > A(kSoftplusThreshold) ? z : log1p_acc(exp_acc(z));
      case kSwish: return z * sigmoid(z);
      default: return z;  // linear
    }
  }

  // act'(z)
  static SGD_HD A first(int act, A z, A alpha) {
    switch (act) {
      case kRelu: return z > A(0) ? A(1) : A(0);
      case kLrelu: return z > A(0) ? A(1) : alpha;
      case kTanh: { const A t = tanh_acc(z); return A(1) - t * t; }
      case kSigmoid: { const A s = sigmoid(z); return s * (A(1) - s); }
      case kElu: return z > A(0) ? A(1) : exp_acc(z);
      case kSelu: return z > A(0) ? A(kSeluScale) : A(kSeluScale * kSeluAlpha) * exp_acc(z);
      case kSoftplus: return z > A(kSoftplusThreshold) ? A(1) : sigmoid(z);
      case kSwish: { const A s = sigmoid(z); return s * (A(1) + z * (A(1) - s)); }
      default: return A(1);  // linear
    }
  }

  // act''(z)
  static SGD_HD A second(int act, A z, A /*alpha: lrelu is piecewise linear*/) {
    switch (act) {
      case kTanh: { const A t = tanh_acc(z); return A(-2) * t * (A(1) - t * t); }
      case kSigmoid: { const A s = sigmoid(z); return s * (A(1) - s) * (A(1) - A(2) * s); }
      case kElu: return z > A(0) ? A(0) : exp_acc(z);
      case kSelu: return z > A(0) ? A(0) : A(kSeluScale * kSeluAlpha) * exp_acc(z);
      case kSoftplus: { if (z > A(kSoftplusThreshold)) return A(0); const A s = sigmoid(z); return s * (A(1) - s); }
      case kSwish: { const A s = sigmoid(z); return s * (A(1) - s) * (A(2) + z * (A(1) - A(2) * s)); }
      default: return A(0);  // linear, relu, lrelu: piecewise linear
    }
  }
};

// Channel of the element at memory offset i of a densely stored tensor (see BiasActParams).
template <typename Index>
SGD_HD Index bias_index(Index i, Index bias_stride, Index bias_size) { return (i / bias_stride) % bias_size; }

// One element of bias_act (see BiasActParams): z = x + b, g = the incoming gradient (unused for grad_order 0).
template <typename A>
SGD_HD A bias_act_element(const BiasActParams& p, A z, A g) {
  const A alpha = A(p.alpha), gain = A(p.gain), clamp = A(p.clamp);
  const bool do_clamp = p.clamp >= 0;
  if (p.grad_order == 0) {
    const A v = ActMath<A>::value(p.act, z, alpha) * gain;
    return do_clamp ? (v < -clamp ? -clamp : (v > clamp ? clamp : v)) : v;
  }
  bool pass = true;  // the clamp passes the gradient where it did not clip (inclusive, like torch.clamp)
  if (do_clamp) {
    const A v = ActMath<A>::value(p.act, z, alpha) * gain;
    pass = v >= -clamp && v <= clamp;
  }
  const A d = p.grad_order == 1 ? ActMath<A>::first(p.act, z, alpha) : ActMath<A>::second(p.act, z, alpha);
  return pass ? g * d * gain : A(0);
}

// ---------------------------------------------------------------------------------------------------------------
// The modulated-convolution epilogue (see EpilogueParams): element at memory offset i with value x, parameters
// in the accumulation type A.
template <typename A, typename Index>
SGD_HD A epilogue_element(const EpilogueParams& p, const BiasActParams& act, Index i, A x, const A* scale,
                          const A* add, const A* b) {
  const Index n = (i / Index(p.sx_n)) % Index(p.n);
  const Index c = (i / Index(p.sx_c)) % Index(p.c);
  A z = x;
  if (scale != nullptr) z *= scale[n * Index(p.c) + c];
  if (add != nullptr) {
    const Index h = (i / Index(p.sx_h)) % Index(p.h);
    const Index w = (i / Index(p.sx_w)) % Index(p.w);
    z += add[int64_t(n) * p.sa_n + int64_t(h) * p.sa_h + int64_t(w) * p.sa_w];
  }
  if (b != nullptr) z += b[c];
  return bias_act_element<A>(act, z, A(0));
}

// The forward bias_act parameters the epilogue applies after its sum.
SGD_HD BiasActParams epilogue_activation(const EpilogueParams& p) {
  BiasActParams a;
  a.act = p.act;
  a.alpha = p.alpha;
  a.gain = p.gain;
  a.clamp = p.clamp;
  return a;
}

// ---------------------------------------------------------------------------------------------------------------
// upfirdn2d (see Upfirdn2dParams).

// The filter tap t = i * f_w + j as the kernel applies it (flipped unless flip_filter).
SGD_HD float upfirdn2d_tap(const Upfirdn2dParams& p, int t) {
  const int i = t / p.f_w, j = t % p.f_w;
  return p.flip_filter ? p.f[t] : p.f[(p.f_h - 1 - i) * p.f_w + (p.f_w - 1 - j)];
}

// Along one axis: the first tap index t >= 0 whose upsampled position base + t lands on an input pixel, and that
// pixel's index. Later taps that land are t + up, t + 2 up, ..., on pixels pixel + 1, pixel + 2, ...
SGD_HD void upfirdn2d_first_tap(int base, int up, int& tap, int& pixel) {
  tap = base < 0 ? -base : (up - base % up) % up;
  pixel = (base + tap) / up;
}

// Output pixel (n, ch, oy, ox). w: the taps from upfirdn2d_tap, [f_h * f_w]. load(offset) reads x at an element
// offset (strides sx_*) and returns the accumulation type A.
template <typename A, typename Load>
SGD_HD A upfirdn2d_pixel(const Upfirdn2dParams& p, const float* w, int n, int ch, int oy, int ox, const Load& load) {
  int ty, iy, tx, ix;
  upfirdn2d_first_tap(oy * p.down_y - p.pad_y0, p.up_y, ty, iy);
  upfirdn2d_first_tap(ox * p.down_x - p.pad_x0, p.up_x, tx, ix);
  const int64_t base = int64_t(n) * p.sx_n + int64_t(ch) * p.sx_c;
  A acc = A(0);
  for (int i = ty, yy = iy; i < p.f_h && yy < p.in_h; i += p.up_y, ++yy) {
    const int64_t row = base + int64_t(yy) * p.sx_h;
    const float* w_row = w + i * p.f_w;
    for (int j = tx, xx = ix; j < p.f_w && xx < p.in_w; j += p.up_x, ++xx) {
      acc += A(w_row[j]) * load(row + int64_t(xx) * p.sx_w);
    }
  }
  return acc * A(p.gain);
}

// Element offset of output pixel (n, ch, oy, ox) in y.
SGD_HD int64_t upfirdn2d_out_offset(const Upfirdn2dParams& p, int n, int ch, int oy, int ox) {
  return int64_t(n) * p.sy_n + int64_t(ch) * p.sy_c + int64_t(oy) * p.sy_h + int64_t(ox) * p.sy_w;
}

}  // namespace sgd_ops
