// The float64 reference attention, the verification shape grid, and the documented tolerance.
#pragma once

#include <attune/attention.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace attune::reference {

// Attention computed in double from float inputs: the ground truth every kernel is held to.
std::vector<double> attention(const Problem& p, const float* q, const float* k, const float* v);

// The softmax weights [batch, heads_q, seq_q, seq_kv] in double; masked entries are 0.
std::vector<double> attention_weights(const Problem& p, const float* q, const float* k);

// Batch 1, d_v = d_k: the shorthand the tests write shapes in.
Problem shape(std::int64_t heads_q, std::int64_t heads_kv, std::int64_t seq_q, std::int64_t seq_kv, std::int64_t d,
              bool causal = false);

struct Inputs {
  std::vector<float> q, k, v;
};
// Unit-normal Q, K, V from a fixed seed; Q is multiplied by q_scale (large logits when > 1).
Inputs make_inputs(const Problem& p, float q_scale, std::uint64_t seed);

struct Case {
  Problem problem;
  float q_scale = 1.0f;
  std::string name;  // unique, usable in a GoogleTest name
};
// Odd d_k (1, 3, 7, 65, 129) and lengths (1, 2, 17, 63, 65, 257, 1000), seq_q != seq_kv both
// ways, causal, grouped- and multi-query heads, d_v != d_k, batch > 1, large logits, decode.
std::vector<Case> verification_grid();

// Tolerance on the max abs error of one output, see reference.cpp for the derivation:
// 1e-4, widened only when the logits are so large that float32 cannot represent them to 1e-4.
double tolerance(const Problem& p, const Inputs& in);

struct Check {
  double max_abs_error = 0.0;
  double tolerance = 0.0;
  std::int64_t worst_index = -1;  // flat index of the worst output element
  bool ok() const { return max_abs_error <= tolerance; }
};
// Compares a kernel's output with the reference. NaN anywhere counts as an infinite error.
Check compare(const Problem& p, const Inputs& in, const float* out, const std::vector<double>& ref);

// Runs one kernel/ISA/config on a case and compares it with the (given) reference.
Check run_and_compare(const Case& c, const Inputs& in, const std::vector<double>& ref,
                      const Options& options);

}  // namespace attune::reference
