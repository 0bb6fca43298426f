// Float32 copies of 16-bit tensors for the kernels that compute on float32 buffers, and
// contiguous copies of strided tensors for the definition (naive).
#include "kernel_impl.hpp"

#include <cstring>

namespace attune::detail {
namespace {

// A float32 copy of a tensor stored as `type`, or nullptr when it is already float32.
std::unique_ptr<float[]> widened(Dtype type, const void* src, std::int64_t n) {
  if (type == Dtype::fp32) return nullptr;
  auto copy = std::make_unique_for_overwrite<float[]>(static_cast<std::size_t>(n));
  convert_to_float(type, src, copy.get(), static_cast<std::size_t>(n));
  return copy;
}

// Copies the rows of a [batch, heads, seq, dim] tensor between a strided layout and the
// contiguous one, `size` bytes an element; gather: strided -> dense, else dense -> strided.
void copy_rows(const Strides& st, std::int64_t batch, std::int64_t heads, std::int64_t seq, std::int64_t dim,
               std::size_t size, const unsigned char* from, unsigned char* to, bool gather) {
  const std::size_t row = static_cast<std::size_t>(dim) * size;
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int64_t h = 0; h < heads; ++h)
      for (std::int64_t i = 0; i < seq; ++i) {
        const std::size_t dense = static_cast<std::size_t>(((b * heads + h) * seq + i) * dim) * size;
        const std::size_t strided = static_cast<std::size_t>(b * st.batch + h * st.head + i * st.row) * size;
        std::memcpy(to + (gather ? dense : strided), from + (gather ? strided : dense), row);
      }
}

std::unique_ptr<unsigned char[]> gathered(const Strides& st, std::int64_t batch, std::int64_t heads, std::int64_t seq,
                                          std::int64_t dim, Dtype type, const void* src) {
  auto copy = std::make_unique_for_overwrite<unsigned char[]>(static_cast<std::size_t>(batch * heads * seq * dim) * size_of(type));
  copy_rows(st, batch, heads, seq, dim, size_of(type), static_cast<const unsigned char*>(src), copy.get(), true);
  return copy;
}

// A float32 copy of a quantized K (is_k) or V [batch, heads_kv, seq_kv, d], dequantized with the
// call's scales (kv_quant.hpp's decoding, token by token through the record strides).
std::unique_ptr<float[]> dequantized(const Problem& p, const Tensors& t, bool is_k) {
  const Dtype kv = p.kv_type();
  const std::int64_t d = is_k ? p.d_k : p.d_v;
  auto copy = std::make_unique_for_overwrite<float[]>(static_cast<std::size_t>(p.batch * p.heads_kv * p.seq_kv * d));
  const KvScales& sc = t.variant.kv_scales;
  const void* scales = is_k ? sc.k : sc.v;
  const KvScales::RecordStrides rs = is_k ? sc.k_strides : sc.v_strides;
  const std::int64_t rec = scale_record_elements(kv, d, is_k);
  const std::size_t esize = scale_element_bytes(kv);
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t h = 0; h < p.heads_kv; ++h) {
      const std::int64_t row0 = (b * p.heads_kv + h) * p.seq_kv;
      const auto* codes = static_cast<const unsigned char*>(is_k ? t.k : t.v) + row_bytes(kv, row0 * d);
      const float* fixed = nullptr;
      if (kv == Dtype::fp8_e4m3 || kv == Dtype::fp8_e5m2) fixed = static_cast<const float*>(scales) + h;
      if (kv == Dtype::int8_kc && is_k) fixed = static_cast<const float*>(scales) + (b * p.heads_kv + h) * d;
      for (std::int64_t i = 0; i < p.seq_kv; ++i) {
        const std::int64_t r = rs.contiguous_default() ? row0 + i : b * rs.batch + h * rs.head + i * rs.token;
        const void* record = rec > 0 ? static_cast<const unsigned char*>(scales) + static_cast<std::size_t>(r * rec) * esize : nullptr;
        dequantize_kv(kv, is_k, codes + row_bytes(kv, i * d), record, 1, d, copy.get() + (row0 + i) * d, fixed);
      }
    }
  return copy;
}

}  // namespace

ContiguousCopies::ContiguousCopies(const Problem& p, const Tensors& t) : p_(p), caller_(t), view_(t) {
  if (!p.strided) return;
  const Dtype kv = p.kv_type();
  q_ = gathered(t.variant.q_strides, p.batch, p.heads_q, p.seq_q, p.d_k, p.dtype, t.q);
  k_ = gathered(t.variant.k_strides, p.batch, p.heads_kv, p.seq_kv, p.d_k, kv, t.k);
  v_ = gathered(t.variant.v_strides, p.batch, p.heads_kv, p.seq_kv, p.d_v, kv, t.v);
  o_ = std::make_unique_for_overwrite<unsigned char[]>(static_cast<std::size_t>(p.out_elements()) * size_of(p.dtype));
  view_.q = q_.get();
  view_.k = k_.get();
  view_.v = v_.get();
  view_.out = o_.get();
}

void ContiguousCopies::finish() {
  if (!o_) return;
  copy_rows(caller_.variant.out_strides, p_.batch, p_.heads_q, p_.seq_q, p_.d_v, size_of(p_.dtype), o_.get(),
            static_cast<unsigned char*>(caller_.out), false);
}

std::size_t ContiguousCopies::bytes(const Problem& p) {
  if (!p.strided) return 0;
  const std::size_t qo = size_of(p.dtype), kv = size_of(p.kv_type());
  const std::size_t elements_qo = static_cast<std::size_t>(p.q_elements() + p.out_elements());
  const std::size_t elements_kv = static_cast<std::size_t>(p.k_elements() + p.v_elements());
  return saturating_add(saturating_mul(elements_qo, qo), saturating_mul(elements_kv, kv));
}

Float32Copies::Float32Copies(const Problem& p, const Tensors& t) : p_(p), out_(t.out) {
  const Dtype kv = p.kv_type();
  q_ = widened(p.dtype, t.q, p.q_elements());
  k_ = is_quantized(kv) ? dequantized(p, t, true) : widened(kv, t.k, p.k_elements());
  v_ = is_quantized(kv) ? dequantized(p, t, false) : widened(kv, t.v, p.v_elements());
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
