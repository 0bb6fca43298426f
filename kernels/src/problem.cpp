// Validation and derived quantities of attune::Problem.
#include <attune/error.hpp>
#include <attune/problem.hpp>

#include <cmath>
#include <limits>
#include <sstream>
#include <utility>

namespace attune {
namespace {

[[noreturn]] void fail(const std::string& field, std::int64_t value, const char* why) {
  std::ostringstream os;
  os << "invalid problem: " << field << " = " << value << " " << why;
  throw InvalidArgument(os.str());
}

std::int64_t checked_product(std::initializer_list<std::int64_t> factors, const char* what) {
  std::int64_t result = 1;
  for (std::int64_t f : factors) {
    if (__builtin_mul_overflow(result, f, &result)) {
      throw InvalidArgument(std::string("invalid problem: ") + what +
                            " overflows a 64-bit element count");
    }
  }
  // Byte counts must fit as well (at most 4 bytes an element), with headroom for index arithmetic.
  if (result > std::numeric_limits<std::int64_t>::max() / 8) {
    throw InvalidArgument(std::string("invalid problem: ") + what + " has " +
                          std::to_string(result) + " elements, too many to address");
  }
  return result;
}

}  // namespace

void Problem::validate() const {
  const std::pair<const char*, std::int64_t> positive[] = {
      {"batch", batch}, {"heads_q", heads_q}, {"heads_kv", heads_kv}, {"seq_q", seq_q},
      {"seq_kv", seq_kv}, {"d_k", d_k},       {"d_v", d_v}};
  for (const auto& [name, value] : positive) {
    if (value <= 0) fail(name, value, "must be positive");
  }
  if (heads_q % heads_kv != 0) {
    std::ostringstream os;
    os << "invalid problem: heads_q = " << heads_q << " is not a multiple of heads_kv = " << heads_kv;
    throw InvalidArgument(os.str());
  }
  if (scale && !std::isfinite(*scale)) {
    throw InvalidArgument("invalid problem: scale = " + std::to_string(*scale) +
                          " must be finite");
  }
  for (const auto& [name, type] : {std::pair{"dtype", dtype}, std::pair{"kv_dtype", kv_type()}}) {
    if (attune::to_string(type) == "unknown")
      fail(name, static_cast<std::int64_t>(type), "is not an element type (fp32, bf16, fp16)");
  }
  checked_product({batch, heads_q, seq_q, d_k}, "Q");
  checked_product({batch, heads_kv, seq_kv, d_k}, "K");
  checked_product({batch, heads_kv, seq_kv, d_v}, "V");
  checked_product({batch, heads_q, seq_q, d_v}, "O");
  checked_product({batch, heads_q, seq_q, seq_kv}, "the score matrix");
}

float Problem::effective_scale() const {
  return scale ? *scale : static_cast<float>(1.0 / std::sqrt(static_cast<double>(d_k)));
}

std::int64_t Problem::group_size() const { return heads_q / heads_kv; }
std::int64_t Problem::q_elements() const { return batch * heads_q * seq_q * d_k; }
std::int64_t Problem::k_elements() const { return batch * heads_kv * seq_kv * d_k; }
std::int64_t Problem::v_elements() const { return batch * heads_kv * seq_kv * d_v; }
std::int64_t Problem::out_elements() const { return batch * heads_q * seq_q * d_v; }

std::int64_t Problem::visible_keys(std::int64_t i) const {
  if (!causal) return seq_kv;
  const std::int64_t end = i + seq_kv - seq_q + 1;
  return end < 0 ? 0 : (end > seq_kv ? seq_kv : end);
}

std::int64_t Problem::visible_pairs() const {
  if (!causal) return seq_q * seq_kv;
  // Rows before `first` see nothing; rows from `full` on see every key; between, the count
  // grows by one per row: an arithmetic series.
  const std::int64_t offset = seq_kv - seq_q;  // row i sees i + offset + 1 keys, clamped
  const std::int64_t first = offset >= 0 ? 0 : -offset;                // first row seeing >= 1
  const std::int64_t full = std::max<std::int64_t>(seq_kv - 1 - offset, 0);  // first row seeing all
  std::int64_t pairs = 0;
  const std::int64_t ramp_end = std::min(full, seq_q);
  if (ramp_end > first) {
    const std::int64_t lo = first + offset + 1, hi = ramp_end - 1 + offset + 1;
    pairs += (lo + hi) * (ramp_end - first) / 2;
  }
  if (seq_q > std::max(full, first)) pairs += (seq_q - std::max(full, first)) * seq_kv;
  return pairs;
}

double Problem::flops() const {
  return 2.0 * static_cast<double>(d_k + d_v) * static_cast<double>(batch * heads_q) *
         static_cast<double>(visible_pairs());
}

double Problem::min_bytes() const {
  const double qo = static_cast<double>(size_of(dtype)), kv = static_cast<double>(size_of(kv_type()));
  return qo * static_cast<double>(q_elements() + out_elements()) + kv * static_cast<double>(k_elements() + v_elements());
}

std::string Problem::to_string() const {
  std::ostringstream os;
  os << "b" << batch << "_hq" << heads_q << "_hkv" << heads_kv << "_sq" << seq_q << "_skv"
     << seq_kv << "_dk" << d_k << "_dv" << d_v << "_causal" << (causal ? 1 : 0);
  if (dtype != Dtype::fp32) os << "_" << attune::to_string(dtype);
  if (kv_type() != dtype) os << "_kv" << attune::to_string(kv_type());
  return os.str();
}

}  // namespace attune
