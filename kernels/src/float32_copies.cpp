// Float32 copies of 16-bit tensors for the kernels that compute on float32 buffers.
#include "kernel_impl.hpp"

namespace attune::detail {
namespace {

// A float32 copy of a tensor stored as `type`, or nullptr when it is already float32.
std::unique_ptr<float[]> widened(Dtype type, const void* src, std::int64_t n) {
  if (type == Dtype::fp32) return nullptr;
  auto copy = std::make_unique_for_overwrite<float[]>(static_cast<std::size_t>(n));
  convert_to_float(type, src, copy.get(), static_cast<std::size_t>(n));
  return copy;
}

}  // namespace

Float32Copies::Float32Copies(const Problem& p, const Tensors& t) : p_(p), out_(t.out) {
  const Dtype kv = p.kv_type();
  q_ = widened(p.dtype, t.q, p.q_elements());
  k_ = widened(kv, t.k, p.k_elements());
  v_ = widened(kv, t.v, p.v_elements());
  if (p.dtype != Dtype::fp32) o_ = std::make_unique_for_overwrite<float[]>(static_cast<std::size_t>(p.out_elements()));
  view_ = {q_ ? q_.get() : static_cast<const float*>(t.q), k_ ? k_.get() : static_cast<const float*>(t.k),
           v_ ? v_.get() : static_cast<const float*>(t.v), o_ ? o_.get() : static_cast<float*>(t.out)};
}

void Float32Copies::finish() {
  if (o_) convert_from_float(p_.dtype, o_.get(), out_, static_cast<std::size_t>(p_.out_elements()));
}

std::size_t Float32Copies::bytes(const Problem& p) {
  std::size_t bytes = 0;
  if (p.dtype != Dtype::fp32) bytes = saturating_add(float_bytes({p.q_elements()}), float_bytes({p.out_elements()}));
  if (p.kv_type() != Dtype::fp32)
    bytes = saturating_add(bytes, saturating_add(float_bytes({p.k_elements()}), float_bytes({p.v_elements()})));
  return bytes;
}

}  // namespace attune::detail
