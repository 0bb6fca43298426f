// Every registered kernel, on every ISA this CPU runs, against the float64 reference over the
// verification grid; kernels with tile parameters also run with degenerate and odd tiles.
// Kernels registered later are covered automatically: the parameters come from the registry.
#include "reference.hpp"

#include <attune/attune.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <ostream>
#include <memory>

namespace {

using attune::reference::Case;

struct Param {
  const attune::Kernel* kernel;
  attune::Isa isa;
  Case c;
  attune::Config config;
  std::string config_name;  // empty for the kernel defaults
};

struct Expected {
  attune::reference::Inputs in;
  std::vector<double> ref;
};

// The reference of a case is computed once and shared by every kernel/ISA.
const Expected& expected(const Case& c) {
  static std::map<std::string, std::unique_ptr<Expected>> cache;
  auto& slot = cache[c.name];
  if (!slot) {
    slot = std::make_unique<Expected>();
    slot->in = attune::reference::make_inputs(c, 42);
    // Paged cases: the reference of the gathered (packed varlen) K/V.
    slot->ref = attune::reference::attention(attune::reference::unpaged(c.problem), slot->in.q.data(),
                                             slot->in.k.data(), slot->in.v.data(), slot->in.variant());
  }
  return *slot;
}

// Tile configurations beyond the defaults: tiles of 1, odd tiles, tiles larger than any
// sequence, several thread counts, each register tile forced (also on decoding rows), row
// counts that split into lane chunks of different widths.
std::vector<std::pair<std::string, attune::Config>> extra_configs() {
  return {{"tiles1x1", {1, 1, 0, 0}},
          {"tiles7x13", {7, 13, 0, 0}},
          {"tiles4096", {4096, 4096, 0, 0}},
          {"t1", {0, 0, 1, 0}},
          {"t3_split3", {16, 32, 3, 3}},
          {"narrow_tile", {0, 0, 0, 0, 1}},
          {"wide_tile_7x13_t2", {7, 13, 2, 0, 2}},
          // 112 rows: lane chunks of 4, 2 and 1 vectors on AVX-512 (2 + 1 + ... elsewhere);
          // the 33-row and 65-row tails take other mixes.
          {"wide_tile_chunks_112x13", {112, 13, 0, 0, 2}}};
}

std::vector<Param> all_params() {
  std::vector<Param> out;
  const auto grid = attune::reference::verification_grid();
  for (const attune::Kernel* k : attune::kernels()) {
    for (attune::Isa isa : attune::runnable_isas(*k)) {
      for (const Case& c : grid)
        if (k->supports(c.problem, isa)) out.push_back({k, isa, c, {}, ""});
      if (k->params().empty()) continue;
      // Extra configurations on a subset of the grid with tails, causal and GQA.
      for (const auto& [name, config] : extra_configs()) {
        for (const Case& c : grid) {
          const auto& p = c.problem;
          const bool interesting = (p.seq_q == 65 && p.seq_kv == 63 && (p.d_k == 7 || p.d_k == 129)) ||
                                   (p.seq_q == 17 && p.seq_kv == 1000) || (p.seq_q == 1 && p.seq_kv == 1000) ||
                                   (p.seq_q == 257 && p.seq_kv == 17);
          if (interesting && k->supports(p, isa)) out.push_back({k, isa, c, config, name});
        }
      }
    }
  }
  return out;
}

// Keeps GoogleTest from dumping the parameter's bytes on failure; the name says it all.
void PrintTo(const Param& p, std::ostream* os) {
  *os << p.kernel->name() << "/" << attune::to_string(p.isa) << "/" << p.c.name
      << (p.config_name.empty() ? "" : "/" + p.config_name);
}

class Equivalence : public ::testing::TestWithParam<Param> {};
class Determinism : public ::testing::TestWithParam<Param> {};

TEST_P(Equivalence, MatchesFloat64Reference) {
  const Param& prm = GetParam();
  const Expected& e = expected(prm.c);
  attune::Options o;
  o.kernel = std::string(prm.kernel->name());
  o.isa = prm.isa;
  o.config = prm.config;
  const auto check = attune::reference::run_and_compare(prm.c, e.in, e.ref, o);
  EXPECT_LE(check.max_abs_error, check.tolerance)
      << prm.kernel->name() << "/" << attune::to_string(prm.isa) << " on " << prm.c.name
      << (prm.config_name.empty() ? "" : " with " + prm.config_name) << ": worst error at flat index "
      << check.worst_index << " (reference " << e.ref[static_cast<std::size_t>(check.worst_index)] << ")";
}

// Two runs with the same config (threads, splits) give bit-identical results: the determinism
// contract of attune's own kernels (a BLAS-backed one is held to the bound by Equivalence only).
TEST_P(Determinism, BitIdenticalForFixedConfig) {
  const Param& prm = GetParam();
  if (!prm.kernel->bit_reproducible()) GTEST_SKIP() << prm.kernel->name() << " is what its BLAS gives";
  const Expected& e = expected(prm.c);
  attune::Options o;
  o.kernel = std::string(prm.kernel->name());
  o.isa = prm.isa;
  o.config = prm.config;
  const auto& p = prm.c.problem;
  const auto s = attune::reference::store(p, e.in);
  std::vector<unsigned char> a(static_cast<std::size_t>(p.out_elements()) * attune::size_of(p.dtype)), b(a.size());
  attune::attention(p, s.q_data(), s.k_data(), s.v_data(), a.data(), e.in.variant(), o);
  attune::attention(p, s.q_data(), s.k_data(), s.v_data(), b.data(), e.in.variant(), o);
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size()));
}

std::string param_name(const ::testing::TestParamInfo<Param>& info) {
  std::string name = std::string(info.param.kernel->name()) + "_" + std::string(attune::to_string(info.param.isa)) +
                     "_" + info.param.c.name;
  if (!info.param.config_name.empty()) name += "_" + info.param.config_name;
  return name;
}

std::vector<Param> configured_params() {
  std::vector<Param> out;
  for (const Param& p : all_params())
    if (!p.config_name.empty()) out.push_back(p);
  return out;
}

// A grid's cases on every kernel and ISA that supports() each, with the default config and, on
// the tiled kernels, the other configs on a rotating share of the cases (every `share`-th).
std::vector<Param> grid_params(const std::vector<Case>& grid, std::size_t share) {
  const std::pair<std::string, attune::Config> configs[] = {
      {"", {}}, {"tiles7x13", {7, 13, 0, 0}}, {"t2_split3", {16, 32, 2, 3}}, {"narrow_tile", {0, 0, 0, 0, 1}},
      {"wide_tile_33x16", {33, 16, 0, 0, 2}}};
  std::vector<Param> out;
  for (const attune::Kernel* k : attune::kernels()) {
    for (attune::Isa isa : attune::runnable_isas(*k)) {
      for (std::size_t i = 0; i < grid.size(); ++i) {
        const Case& c = grid[i];
        if (!k->supports(c.problem, isa)) continue;
        for (const auto& [name, config] : configs) {
          if (!name.empty() && (k->params().empty() || (i + name.size()) % share != 0)) continue;
          out.push_back({k, isa, c, config, name});
        }
      }
    }
  }
  return out;
}

// The variants' matrix (reference::variant_grid).
std::vector<Param> variant_params() { return grid_params(attune::reference::variant_grid(), 3); }
// Quantized K/V (reference::quant_grid).
std::vector<Param> quant_params() { return grid_params(attune::reference::quant_grid(), 4); }
// Paged K/V with every K/V type (reference::paged_grid): odd tiles (13 keys against blocks of 16,
// so tiles end at block ends and straddle none), key splits and each register tile included.
std::vector<Param> paged_params() { return grid_params(attune::reference::paged_grid(), 2); }

INSTANTIATE_TEST_SUITE_P(Registry, Equivalence, ::testing::ValuesIn(all_params()), param_name);
INSTANTIATE_TEST_SUITE_P(Quantized, Equivalence, ::testing::ValuesIn(quant_params()), param_name);
INSTANTIATE_TEST_SUITE_P(Variants, Equivalence, ::testing::ValuesIn(variant_params()), param_name);
INSTANTIATE_TEST_SUITE_P(Paged, Equivalence, ::testing::ValuesIn(paged_params()), param_name);

// Bit-identical reruns of the variants with threads and key splits (strided cases need their
// own buffer layout, which the determinism test does not build).
std::vector<Param> variant_determinism_params() {
  std::vector<Param> out;
  for (const Param& p : variant_params())
    if (p.config_name == "t2_split3" && !p.c.problem.strided) out.push_back(p);
  return out;
}
INSTANTIATE_TEST_SUITE_P(Variants, Determinism, ::testing::ValuesIn(variant_determinism_params()), param_name);
INSTANTIATE_TEST_SUITE_P(Registry, Determinism, ::testing::ValuesIn(configured_params()), param_name);

// ISAs this build has but this CPU lacks are reported as skipped, so the gap is visible.
TEST(EquivalenceCoverage, IsasThisCpuCannotRun) {
  std::string missing;
  for (attune::Isa isa : attune::compiled_isas())
    if (!attune::cpu_supports(isa)) missing += std::string(attune::to_string(isa)) + " ";
  if (!missing.empty()) GTEST_SKIP() << "compiled but not runnable on this CPU: " << missing;
}

// Every variant case runs on at least one kernel besides the definition (naive), except top-k,
// which only naive implements.
TEST(EquivalenceCoverage, VariantsRunOnATiledKernel) {
  for (const Case& c : attune::reference::variant_grid()) {
    if (c.problem.top_k > 0) continue;
    bool tiled = false;
    for (const attune::Kernel* k : attune::kernels())
      for (attune::Isa isa : attune::runnable_isas(*k))
        tiled = tiled || (k->name() != "naive" && k->supports(c.problem, isa));
    EXPECT_TRUE(tiled) << c.name;
  }
}

// Every paged case runs on flash, on every ISA this CPU runs.
TEST(EquivalenceCoverage, PagedRunsOnFlashEverywhere) {
  const attune::Kernel* flash = attune::find_kernel("flash");
  ASSERT_NE(flash, nullptr);
  for (const Case& c : attune::reference::paged_grid())
    for (attune::Isa isa : attune::runnable_isas(*flash)) EXPECT_TRUE(flash->supports(c.problem, isa)) << c.name << " " << attune::to_string(isa);
}

// Every kernel with a portable (scalar) build runs here; a kernel without one whose builds
// cannot run (amx on aarch64, or on a CPU without AMX-BF16, or capped by ATTUNE_ISA) is
// reported as skipped, so the gap is visible.
TEST(EquivalenceCoverage, EveryKernelHasARunnableIsa) {
  std::string absent;
  for (const attune::Kernel* k : attune::kernels()) {
    const auto built = k->isas();
    const bool portable = std::find(built.begin(), built.end(), attune::Isa::scalar) != built.end();
    if (portable) {
      EXPECT_FALSE(attune::runnable_isas(*k).empty()) << k->name();
    } else if (attune::runnable_isas(*k).empty()) {
      absent += std::string(k->name()) + (built.empty() ? " (not built for this target) " : " (its ISAs cannot run here) ");
    }
  }
  if (!absent.empty()) GTEST_SKIP() << "kernels that cannot run here: " << absent;
}

TEST(EquivalenceCoverage, MicroKernelOutOfRangeIsRefused) {
  attune::Problem p;
  p.heads_q = p.heads_kv = 1;
  p.seq_q = p.seq_kv = 4;
  p.d_k = p.d_v = 8;
  attune::Options o;
  o.config.micro = 3;
  EXPECT_THROW(attune::resolve(p, o), attune::InvalidArgument);
  o.config.micro = -1;
  EXPECT_THROW(attune::resolve(p, o), attune::InvalidArgument);
}

}  // namespace
