// The kernel interface, its run-time configuration, and the registry every variant joins.
#pragma once

#include <attune/isa.hpp>
#include <attune/problem.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace attune {

// Config::micro: the register tile of the SIMD micro-kernel. An int wherever it is stored (the
// tuned table, the tuner's log, Python); `--micro auto|narrow|wide` on the command line.
enum MicroTile : int {
  micro_auto = 0,    // the dot-product form for <= 4 query rows, else the smallest tile holding them
  micro_narrow = 1,  // one vector of query rows, for any row count
  micro_wide = 2,    // the ISA's widest: two vectors of rows, for any row count
};

// Run-time parameters of a kernel. Zero means "the kernel's default"; the tuner sets them.
struct Config {
  std::int64_t block_q = 0;   // query rows per tile
  std::int64_t block_kv = 0;  // keys per tile
  int threads = 0;            // worker threads; 0 = all cores
  int kv_splits = 0;          // splits of the key range per (batch, head, query tile); 0 = auto
  int micro = micro_auto;     // a MicroTile
};

// The caller's tensors, stored as the problem's dtype (Q, O) and kv_dtype (K, V), and the
// arrays of the variants the problem enables (validated before run() is called).
struct Tensors {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* out = nullptr;
  VariantData variant;
};

// One tunable parameter of a kernel, for the tuner's search space.
struct ParamSpec {
  std::string name;                 // a Config field name, e.g. "block_q"
  std::vector<std::int64_t> values; // candidate values
};

class Kernel {
 public:
  virtual ~Kernel() = default;
  virtual std::string_view name() const noexcept = 0;
  virtual std::string_view description() const noexcept = 0;
  // ISAs this kernel was compiled for, best first; runnable ones are these & runnable_isas().
  virtual std::vector<Isa> isas() const = 0;
  // Preference of `auto` when nothing is tuned: higher wins.
  virtual int rank() const noexcept = 0;
  // Parameters the tuner may set (empty for kernels without any).
  virtual std::vector<ParamSpec> params() const { return {}; }
  // Whether run() takes this problem on `isa`: its element types (kernels that compute from
  // float32 copies take every type; a kernel with ISA-specific 16-bit code may not) and its
  // variants. The default takes every type but only Problem::plain() problems, so a new kernel
  // never receives a mask, window, soft-cap, ALiBi, sinks, top-k, varlen or strides it ignores;
  // an override that narrows the types should keep `problem.plain() &&`.
  virtual bool supports(const Problem& problem, Isa isa) const {
    (void)isa;
    return problem.plain();
  }
  // The type P (the softmax weights) is rounded to for the PV product on `isa`: fp32 when the
  // kernel multiplies in float32 (every conversion path), bf16 where it uses bf16 dot products.
  // The reference's error bound depends on it (reference/reference.cpp).
  virtual Dtype pv_dtype(const Problem& problem, Isa isa) const {
    (void)problem;
    (void)isa;
    return Dtype::fp32;
  }
  // The determinism contract (docs/robustness.md): true when the output bits depend only on
  // the problem, the inputs, the ISA and the plan (block_q, block_kv, kv_splits, micro), never on
  // the thread count, concurrent callers or the call. False for a kernel whose arithmetic is a
  // library's (the BLAS baseline): it is held to the reference's error bound instead.
  virtual bool bit_reproducible() const noexcept { return true; }
  // Bytes of working memory run() allocates for this problem and config on `isa` (scratch and
  // partial results, not the caller's tensors), saturating at SIZE_MAX instead of overflowing.
  // attention() compares it with the limit before calling run().
  virtual std::size_t workspace_bytes(const Problem& problem, const Config& config, Isa isa) const = 0;
  // Computes the attention. The problem is validated, tensors are non-null, the ISA runnable.
  virtual void run(const Problem& problem, const Tensors& tensors, const Config& config,
                   Isa isa) const = 0;

 private:
  // Reorders `isas` (this kernel's runnable ISAs that take the problem, best first by the
  // build's order) when another order is faster for this problem on this CPU: simd and flash
  // put avx512_bf16 first for bf16 problems where the CPU's bf16 dot product outpaces its fp32
  // FMA (bf16_dot_speedup()). A kernel's hook, called only by runnable_isas(kernel, problem),
  // whose order `auto` and the bench follow (they take the first).
  virtual void order_isas(const Problem& problem, std::vector<Isa>& isas) const {
    (void)problem;
    (void)isas;
  }
  friend std::vector<Isa> runnable_isas(const Kernel& kernel, const Problem& problem);
};

// Every registered kernel, in registration order (naive first).
std::span<const Kernel* const> kernels();
// nullptr if no kernel has that name.
const Kernel* find_kernel(std::string_view name);
// Runnable ISAs of one kernel on this machine, best first.
std::vector<Isa> runnable_isas(const Kernel& kernel);
// Those that take `problem` (Kernel::supports), best first for it (Kernel::order_isas).
std::vector<Isa> runnable_isas(const Kernel& kernel, const Problem& problem);

}  // namespace attune
