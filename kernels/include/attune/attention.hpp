// The core entry point: scaled dot-product attention with any registered kernel.
#pragma once

#include <attune/isa.hpp>
#include <attune/kernel.hpp>
#include <attune/problem.hpp>

#include <optional>
#include <string>

namespace attune {

struct Options {
  std::string kernel = "auto";  // a registered kernel name, or "auto"
  std::optional<Isa> isa;       // force an ISA; default: the best runnable one
  Config config;
};

// Validates everything (problem, pointers, kernel, ISA, config), then computes
// out = softmax(scale * q k^T + causal mask) v. Throws InvalidArgument on bad input.
void attention(const Problem& problem, const float* q, const float* k, const float* v, float* out,
               const Options& options = {});

// What `auto` (or an explicit choice with defaults filled in) resolves to for a problem.
struct Choice {
  const Kernel* kernel = nullptr;
  Isa isa = Isa::scalar;
  Config config;
};
Choice resolve(const Problem& problem, const Options& options = {});

}  // namespace attune
