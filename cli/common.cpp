// The flags every command that runs a kernel shares, and small command-line checks.
#include "common.hpp"

#include "memory_limit.hpp"

#include <attune/error.hpp>
#include <attune/isa.hpp>
#include <attune/kernel.hpp>

#include <algorithm>
#include <cstdint>

namespace attune::cli {

const std::set<std::string> kRunFlags = {"--kernel", "--isa", "--threads", "--block-q", "--block-kv",
                                         "--kv-splits", "--micro"};

Options parse_options(const Args& a) {
  Options o;
  if (auto kernel = a.get("--kernel")) {
    if (*kernel != "auto" && find_kernel(*kernel) == nullptr) {
      std::string names;
      for (const Kernel* k : kernels()) names += std::string(k->name()) + ", ";
      throw UsageError("unknown kernel '" + *kernel + "' (known: " + names + "auto)");
    }
    o.kernel = *kernel;
  }
  if (auto isa = a.get("--isa")) {
    const auto parsed = parse_isa(*isa);
    if (!parsed) {
      std::string names;
      for (Isa i : compiled_isas()) names += (names.empty() ? "" : ", ") + std::string(to_string(i));
      throw UsageError("unknown isa '" + *isa + "' (compiled: " + names + ")");
    }
    try {
      require_isa(*parsed);
    } catch (const InvalidArgument& e) {
      throw UsageError(e.what());
    }
    o.isa = parsed;
  }
  // A pair that `attune kernels` does not list is a bad command line (exit 2), like an unknown
  // name; left to attention() it would surface as a data error (exit 1).
  if (o.isa && o.kernel != "auto") {
    const auto isas = runnable_isas(*find_kernel(o.kernel));
    if (std::find(isas.begin(), isas.end(), *o.isa) == isas.end())
      throw UsageError("kernel '" + o.kernel + "' has no '" + std::string(to_string(*o.isa)) +
                       "' build (see attune kernels)");
  }
  if (auto t = a.get_int("--threads", 1)) o.config.threads = static_cast<int>(std::min<std::int64_t>(*t, 1 << 16));
  if (auto b = a.get_int("--block-q", 1)) o.config.block_q = *b;
  if (auto b = a.get_int("--block-kv", 1)) o.config.block_kv = *b;
  if (auto s = a.get_int("--kv-splits", 1)) o.config.kv_splits = static_cast<int>(std::min<std::int64_t>(*s, 1 << 16));
  if (auto m = a.get("--micro")) {
    if (*m == "auto") o.config.micro = micro_auto;
    else if (*m == "narrow") o.config.micro = micro_narrow;
    else if (*m == "wide") o.config.micro = micro_wide;
    else throw UsageError("--micro = '" + *m + "': expected auto, narrow or wide");
  }
  if (auto m = a.get("--max-memory")) {  // only `run` and `mha` accept the flag
    const auto bytes = detail::parse_bytes(*m);
    if (!bytes)
      throw UsageError("--max-memory = '" + *m +
                       "' is not a size: a positive number of bytes with an optional K, M, G or T suffix "
                       "(powers of 1024), e.g. 512M");
    o.max_workspace_bytes = *bytes;
  }
  workspace_limit(o);  // a malformed ATTUNE_MAX_MEMORY fails here, before any file is read
  return o;
}

std::set<std::string> with(std::set<std::string> a, const std::set<std::string>& b) {
  a.insert(b.begin(), b.end());
  return a;
}

void no_positional(const Args& a) {
  if (!a.positional().empty()) throw UsageError("unexpected argument '" + a.positional().front() + "'");
}

Problem typed_probe(Dtype dtype, Dtype kv_dtype) {
  Problem p;
  p.seq_q = p.seq_kv = 16;
  p.d_k = p.d_v = 16;
  p.dtype = dtype;
  if (kv_dtype != dtype) p.kv_dtype = kv_dtype;
  return p;
}

}  // namespace attune::cli
