// The core entry point: scaled dot-product attention with any registered kernel.
#pragma once

#include <attune/isa.hpp>
#include <attune/kernel.hpp>
#include <attune/problem.hpp>

#include <cstddef>
#include <optional>
#include <string>

namespace attune {

struct Options {
  std::string kernel = "auto";  // a registered kernel name, or "auto"
  std::optional<Isa> isa;       // force an ISA; default: the best runnable one
  Config config;
  // Most working memory (bytes) a call may allocate beyond the caller's tensors; a call that
  // needs more is refused before allocating. 0: the environment variable ATTUNE_MAX_MEMORY,
  // else half the physical memory (workspace_limit()).
  std::size_t max_workspace_bytes = 0;
};

// Validates everything (problem, pointers, kernel, ISA, config), then computes
// out = softmax(scale * q k^T + causal mask) v (with the variants problem.hpp describes). The tensors are stored as the problem says:
// q and out as problem.dtype, k and v as problem.kv_type() (float, attune::bf16 or attune::fp16
// elements). Throws InvalidArgument on bad input, and MemoryError when the kernel's working
// memory exceeds the limit (checked before allocating) or an allocation fails.
void attention(const Problem& problem, const void* q, const void* k, const void* v, void* out,
               const Options& options = {});
// The same with the arrays of the problem's variants (mask, ALiBi slopes, sinks; see
// problem.hpp). A problem that enables a variant needs this form.
void attention(const Problem& problem, const void* q, const void* k, const void* v, void* out,
               const VariantData& variant, const Options& options = {});

// Working memory (bytes) attention() would allocate for this problem and options: the resolved
// kernel's scratch and partial results, not the caller's tensors. Saturates at SIZE_MAX.
std::size_t workspace_bytes(const Problem& problem, const Options& options = {});
// The limit a call with these options enforces: options.max_workspace_bytes if non-zero, else
// ATTUNE_MAX_MEMORY (InvalidArgument if malformed), else half the physical memory.
std::size_t workspace_limit(const Options& options = {});

// What `auto` (or an explicit choice with defaults filled in) resolves to for a problem.
struct Choice {
  const Kernel* kernel = nullptr;
  Isa isa = Isa::scalar;
  Config config;
};
Choice resolve(const Problem& problem, const Options& options = {});

}  // namespace attune
