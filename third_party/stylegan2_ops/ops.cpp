// Torch binding of the stylegan_disentangle CUDA ops: argument checks, output allocation, stream selection.
//
// Registers three operators in the `stylegan_disentangle` namespace (torch.ops.stylegan_disentangle.*), for the
// CUDA dispatch key only; autograd is added in Python (stylegan_disentangle/ops/cuda_kernels.py). Only generic
// c10 headers are used (the current stream comes from the device guard interface), so this file compiles against
// any torch's headers, including those of a CPU-only install, and needs no CUDA toolkit headers.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/library.h>

#include <cstdlib>
#include <optional>

#include "sgd_ops.h"

// Build-time seams, for tests only: tests/test_cuda_ops.py can compile this file with host_reference.cpp for CPU
// tensors (-DSGD_OPS_DEVICE=CPU -DSGD_OPS_NAMESPACE=stylegan_disentangle_host -DSGD_HOST_LAUNCHERS) to check this
// argument handling without a GPU. The defaults build the real CUDA extension.
#ifndef SGD_OPS_DEVICE
#define SGD_OPS_DEVICE CUDA
#endif
#ifndef SGD_OPS_NAMESPACE
#define SGD_OPS_NAMESPACE stylegan_disentangle
#endif
// TORCH_LIBRARY pastes its namespace argument, so expand the macro one level first.
#define SGD_TORCH_LIBRARY(ns, m) TORCH_LIBRARY(ns, m)

namespace {

using sgd_ops::DType;

DType to_dtype(const at::Tensor& t, const char* what) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::kFloat32;
    case at::kDouble: return DType::kFloat64;
    case at::kHalf: return DType::kFloat16;
    case at::kBFloat16: return DType::kBFloat16;
    default: TORCH_CHECK(false, what, " must be float32, float64, float16 or bfloat16, got ", t.scalar_type());
  }
  return DType::kFloat32;
}

bool on_device(const at::Tensor& t) { return t.device().type() == c10::DeviceType::SGD_OPS_DEVICE; }

void* current_stream(const at::Tensor& t) {
  if (t.is_cpu()) return nullptr;  // host test build
  return c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)->getStream(t.device()).native_handle();
}

void check_launch(int code, const char* op) {
  TORCH_CHECK(code == 0, "stylegan_disentangle::", op, " kernel launch failed: ", sgd_ops::error_string(code));
}

// See BiasActParams in sgd_ops.h. x: any shape; b: [x.size(dim)] or None; g: like x (grad_order > 0).
// Dense layouts (contiguous, channels_last, any permutation) are processed in place; other inputs are made
// contiguous first. The output has x's layout.
at::Tensor bias_act_cuda(const at::Tensor& x, const std::optional<at::Tensor>& b, const std::optional<at::Tensor>& g,
                         int64_t dim, int64_t act, int64_t grad_order, double alpha, double gain, double clamp) {
  TORCH_CHECK(on_device(x), "bias_act: x must be a CUDA tensor");
  const DType dtype = to_dtype(x, "bias_act: x");
  TORCH_CHECK(act >= sgd_ops::kLinear && act <= sgd_ops::kSwish, "bias_act: unknown activation id ", act);
  TORCH_CHECK(grad_order >= 0 && grad_order <= 2, "bias_act: grad_order must be 0, 1 or 2, got ", grad_order);
  const int64_t ndim = x.dim();
  TORCH_CHECK(ndim >= 1, "bias_act: x must have at least one dimension");
  if (dim < 0) dim += ndim;
  TORCH_CHECK(dim >= 0 && dim < ndim, "bias_act: dim out of range for a ", ndim, "-d tensor");

  c10::DeviceGuard guard(x.device());
  const at::Tensor xd = x.is_non_overlapping_and_dense() ? x : x.contiguous();

  at::Tensor bd;
  if (b.has_value() && b->defined()) {
    TORCH_CHECK(b->dim() == 1 && b->size(0) == x.size(dim), "bias_act: b must be [", x.size(dim), "], got ",
                b->sizes());
    TORCH_CHECK(b->device() == x.device() && b->scalar_type() == x.scalar_type(),
                "bias_act: b must have x's device and dtype");
    bd = b->contiguous();
  }

  at::Tensor gd;
  if (grad_order > 0) {
    TORCH_CHECK(g.has_value() && g->defined(), "bias_act: g is required when grad_order > 0");
    TORCH_CHECK(g->sizes() == x.sizes() && g->device() == x.device() && g->scalar_type() == x.scalar_type(),
                "bias_act: g must have x's shape, device and dtype");
    gd = *g;
    if (gd.strides() != xd.strides()) gd = at::empty_like(xd).copy_(gd);
  }

  at::Tensor out = at::empty_like(xd);
  sgd_ops::BiasActParams p;
  p.x = xd.data_ptr();
  p.b = bd.defined() ? bd.data_ptr() : nullptr;
  p.g = gd.defined() ? gd.data_ptr() : nullptr;
  p.out = out.data_ptr();
  p.numel = xd.numel();
  p.bias_size = xd.size(dim);
  p.bias_stride = p.bias_size > 1 ? xd.stride(dim) : 1;
  p.act = static_cast<int>(act);
  p.grad_order = static_cast<int>(grad_order);
  p.alpha = alpha;
  p.gain = gain;
  p.clamp = clamp;
  check_launch(sgd_ops::launch_bias_act(p, dtype, current_stream(xd)), "bias_act");
  return out;
}

// Index arithmetic in the kernel is 32-bit per axis: every coordinate, including upsampled and padded ones,
// must stay well inside int range.
int checked_int(int64_t v, const char* what) {
  constexpr int64_t kLimit = int64_t(1) << 29;
  TORCH_CHECK(v > -kLimit && v < kLimit, "upfirdn2d: ", what, " = ", v, " is too large for the kernel");
  return static_cast<int>(v);
}

// See Upfirdn2dParams in sgd_ops.h. x: [N, C, H, W] with any strides; f: [fh, fw] float32.
// The output is channels_last when x is, else contiguous.
at::Tensor upfirdn2d_cuda(const at::Tensor& x, const at::Tensor& f, int64_t up_x, int64_t up_y, int64_t down_x,
                          int64_t down_y, int64_t pad_x0, int64_t pad_x1, int64_t pad_y0, int64_t pad_y1,
                          bool flip_filter, double gain) {
  TORCH_CHECK(on_device(x) && x.dim() == 4, "upfirdn2d: x must be a 4-d CUDA tensor [N, C, H, W]");
  const DType dtype = to_dtype(x, "upfirdn2d: x");
  TORCH_CHECK(f.dim() == 2 && f.scalar_type() == at::kFloat && f.device() == x.device(),
              "upfirdn2d: f must be a 2-d float32 tensor on x's device, got ", f.sizes(), " ", f.scalar_type());
  TORCH_CHECK(f.numel() >= 1 && f.numel() <= sgd_ops::kMaxFilterTaps, "upfirdn2d: the filter must have 1 to ",
              sgd_ops::kMaxFilterTaps, " taps, got ", f.numel());
  TORCH_CHECK(up_x >= 1 && up_y >= 1 && down_x >= 1 && down_y >= 1, "upfirdn2d: up and down must be >= 1");

  const int64_t in_h = x.size(2), in_w = x.size(3), f_h = f.size(0), f_w = f.size(1);
  const int64_t out_h = (in_h * up_y + pad_y0 + pad_y1 - f_h) / down_y + 1;
  const int64_t out_w = (in_w * up_x + pad_x0 + pad_x1 - f_w) / down_x + 1;
  TORCH_CHECK(in_h * up_y + pad_y0 + pad_y1 >= f_h && in_w * up_x + pad_x0 + pad_x1 >= f_w,
              "upfirdn2d: the padded image is smaller than the filter (no output pixels)");

  c10::DeviceGuard guard(x.device());
  const bool channels_last = x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous();
  at::Tensor y = at::empty({x.size(0), x.size(1), out_h, out_w},
                           x.options().memory_format(channels_last ? at::MemoryFormat::ChannelsLast
                                                                   : at::MemoryFormat::Contiguous));
  const at::Tensor fd = f.contiguous();

  sgd_ops::Upfirdn2dParams p;
  p.x = x.data_ptr();
  p.f = static_cast<const float*>(fd.data_ptr());
  p.y = y.data_ptr();
  checked_int(in_h * up_y + std::abs(pad_y0) + std::abs(pad_y1), "H * up_y + |padding|");
  checked_int(in_w * up_x + std::abs(pad_x0) + std::abs(pad_x1), "W * up_x + |padding|");
  checked_int(out_h * down_y, "out_h * down_y");
  checked_int(out_w * down_x, "out_w * down_x");
  p.n = checked_int(x.size(0), "N");
  p.c = checked_int(x.size(1), "C");
  p.in_h = static_cast<int>(in_h);
  p.in_w = static_cast<int>(in_w);
  p.out_h = static_cast<int>(out_h);
  p.out_w = static_cast<int>(out_w);
  p.sx_n = x.stride(0); p.sx_c = x.stride(1); p.sx_h = x.stride(2); p.sx_w = x.stride(3);
  p.sy_n = y.stride(0); p.sy_c = y.stride(1); p.sy_h = y.stride(2); p.sy_w = y.stride(3);
  p.up_x = static_cast<int>(up_x); p.up_y = static_cast<int>(up_y);
  p.down_x = checked_int(down_x, "down_x"); p.down_y = checked_int(down_y, "down_y");
  p.pad_x0 = static_cast<int>(pad_x0); p.pad_y0 = static_cast<int>(pad_y0);
  p.f_h = static_cast<int>(f_h);
  p.f_w = static_cast<int>(f_w);
  p.flip_filter = flip_filter;
  p.channels_last = channels_last;
  p.gain = gain;
  check_launch(sgd_ops::launch_upfirdn2d(p, dtype, current_stream(x)), "upfirdn2d");
  return y;
}

// See EpilogueParams in sgd_ops.h. x: [N, C, H, W] (dense layouts in place, others made contiguous); scale: [N, C];
// add: [N or 1, 1, H, W] with any strides; b: [C]. scale, add and b are in the accumulation type (float64 for
// float64 x, else float32). The output has x's layout and dtype.
at::Tensor epilogue_cuda(const at::Tensor& x, const std::optional<at::Tensor>& scale,
                         const std::optional<at::Tensor>& add, const std::optional<at::Tensor>& b, int64_t act,
                         double alpha, double gain, double clamp) {
  TORCH_CHECK(on_device(x) && x.dim() == 4, "epilogue: x must be a 4-d CUDA tensor [N, C, H, W]");
  const DType dtype = to_dtype(x, "epilogue: x");
  TORCH_CHECK(act >= sgd_ops::kLinear && act <= sgd_ops::kSwish, "epilogue: unknown activation id ", act);
  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  auto check_param = [&](const std::optional<at::Tensor>& t, const char* what) -> bool {
    if (!t.has_value() || !t->defined()) return false;
    TORCH_CHECK(t->device() == x.device() && t->scalar_type() == acc, "epilogue: ", what, " must be ",
                c10::toString(acc), " on x's device, got ", t->scalar_type());
    return true;
  };

  c10::DeviceGuard guard(x.device());
  const at::Tensor xd = x.is_non_overlapping_and_dense() ? x : x.contiguous();
  at::Tensor out = at::empty_like(xd);
  sgd_ops::EpilogueParams p;
  p.x = xd.data_ptr();
  p.out = out.data_ptr();
  p.numel = xd.numel();
  p.n = n; p.c = c; p.h = h; p.w = w;
  // A size-1 dim may carry any stride; (i / 1) % 1 == 0 keeps its coordinate at 0.
  p.sx_n = n > 1 ? xd.stride(0) : 1; p.sx_c = c > 1 ? xd.stride(1) : 1;
  p.sx_h = h > 1 ? xd.stride(2) : 1; p.sx_w = w > 1 ? xd.stride(3) : 1;
  at::Tensor scale_d, b_d;
  if (check_param(scale, "scale")) {
    TORCH_CHECK(scale->dim() == 2 && scale->size(0) == n && scale->size(1) == c, "epilogue: scale must be [", n,
                ", ", c, "], got ", scale->sizes());
    scale_d = scale->contiguous();
    p.scale = scale_d.data_ptr();
  }
  if (check_param(add, "add")) {
    TORCH_CHECK(add->dim() == 4 && (add->size(0) == n || add->size(0) == 1) && add->size(1) == 1 &&
                    add->size(2) == h && add->size(3) == w,
                "epilogue: add must be [", n, " or 1, 1, ", h, ", ", w, "], got ", add->sizes());
    p.add = add->data_ptr();
    p.sa_n = add->size(0) > 1 ? add->stride(0) : 0;
    p.sa_h = add->stride(2);
    p.sa_w = add->stride(3);
  }
  if (check_param(b, "b")) {
    TORCH_CHECK(b->dim() == 1 && b->size(0) == c, "epilogue: b must be [", c, "], got ", b->sizes());
    b_d = b->contiguous();
    p.b = b_d.data_ptr();
  }
  p.act = static_cast<int>(act);
  p.alpha = alpha;
  p.gain = gain;
  p.clamp = clamp;
  check_launch(sgd_ops::launch_epilogue(p, dtype, current_stream(xd)), "epilogue");
  return out;
}

}  // namespace

SGD_TORCH_LIBRARY(SGD_OPS_NAMESPACE, m) {
  m.def("bias_act(Tensor x, Tensor? b, Tensor? g, int dim, int act, int grad_order, float alpha, float gain, "
        "float clamp) -> Tensor");
  m.def("upfirdn2d(Tensor x, Tensor f, int up_x, int up_y, int down_x, int down_y, int pad_x0, int pad_x1, "
        "int pad_y0, int pad_y1, bool flip_filter, float gain) -> Tensor");
  m.def("epilogue(Tensor x, Tensor? scale, Tensor? add, Tensor? b, int act, float alpha, float gain, float clamp) "
        "-> Tensor");
}

TORCH_LIBRARY_IMPL(SGD_OPS_NAMESPACE, SGD_OPS_DEVICE, m) {
  m.impl("bias_act", &bias_act_cuda);
  m.impl("upfirdn2d", &upfirdn2d_cuda);
  m.impl("epilogue", &epilogue_cuda);
}
