// Build-time generator of the tuned-table fixture: a synthetic tuning log (this build's
// provenance, hand-picked choices in several storage types, some lines in the older untyped
// format) and the header generated from it, which test_tuned_dispatch.cpp compiles in.
// A fleet header of two machines (a stand-in AVX2-only machine and this one) goes to <fleet.h>.
// Usage: tuned_fixture_gen <log.json> <header.h> <fleet.h>
#include "records.hpp"
#include "reference.hpp"

#include <attune/attune.hpp>

#include <cstdio>
#include <string>
#include <vector>

namespace {

// How a choice line records its storage types: not at all (a log written before the dtype was
// part of the key, which must read as fp32), or as the tuner writes them now.
enum class Format { untyped, typed };

std::string choice(int seq_q, int seq_kv, int d_k, bool causal, int heads_q, int heads_kv,
                   const char* kernel, const char* isa, int bq, int bkv, int threads, int splits,
                   double gflops, Format format = Format::untyped, attune::Dtype dtype = attune::Dtype::fp32,
                   attune::Dtype kv_dtype = attune::Dtype::fp32) {
  attune::Problem p = attune::reference::shape(heads_q, heads_kv, seq_q, seq_kv, d_k, causal);
  p.dtype = dtype;
  if (kv_dtype != dtype) p.kv_dtype = kv_dtype;
  const std::string types = format == Format::untyped
                                ? ""
                                : ",\"dtype\":\"" + std::string(attune::to_string(dtype)) + "\",\"kv_dtype\":\"" +
                                      std::string(attune::to_string(kv_dtype)) + "\"";
  char buf[1024];
  std::snprintf(buf, sizeof buf,
                "{\"type\":\"choice\",\"shape\":\"%s\",\"batch\":1,"
                "\"heads_q\":%d,\"heads_kv\":%d,\"seq_q\":%d,\"seq_kv\":%d,\"d_k\":%d,\"d_v\":%d,\"causal\":%s%s,"
                "\"candidate\":\"x\",\"kernel\":\"%s\",\"isa\":\"%s\",\"block_q\":%d,\"block_kv\":%d,"
                "\"threads\":%d,\"kv_splits\":%d,\"gflops\":%.3f,\"spread\":0.012345,\"samples\":9,"
                "\"tie\":false,\"runner_up\":\"\",\"evaluations\":10,\"space\":100,\"strategy\":\"smart\"}\n",
                p.to_string().c_str(), heads_q, heads_kv, seq_q, seq_kv, d_k, d_k, causal ? "true" : "false",
                types.c_str(), kernel, isa, bq, bkv, threads, splits, gflops);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: tuned_fixture_gen <log.json> <header.h> <fleet.h>\n");
    return 2;
  }
#if defined(__aarch64__)
  const char* foreign_isa = "avx2";
#else
  const char* foreign_isa = "neon";
#endif
  // Written out of key order on purpose: the header must come out sorted.
  std::string log = attune::tuner::provenance_line("smart", "1m", "tuned_fixture_gen (synthetic)");
  log += choice(2048, 2048, 64, false, 8, 8, "simd", "scalar", 16, 256, 0, 0, 12.5);
  log += choice(128, 128, 64, false, 8, 8, "flash", "scalar", 32, 64, 1, 0, 10.25);
  // The same table key as the line above: the shape with more FLOPs (32 heads) wins.
  log += choice(128, 128, 64, false, 32, 32, "blocked", "scalar", 8, 32, 0, 0, 3.0);
  log += choice(1, 4096, 64, false, 32, 8, "flash", "scalar", 16, 512, 1, 4, 20.0);
  log += choice(512, 512, 128, true, 8, 8, "flash", foreign_isa, 64, 64, 0, 0, 99.0);
  log += choice(512, 512, 32, false, 8, 8, "warp9", "scalar", 64, 64, 0, 0, 99.0);
  // Storage types (typed lines): bf16 and fp32-with-bf16-K/V entries in the same bucket as the
  // fp32 128-length entry above, a bf16-only key (d_k 96), and an fp32 line written typed.
  using attune::Dtype;
  log += choice(128, 128, 64, false, 8, 8, "simd", "scalar", 4, 16, 1, 0, 7.0, Format::typed, Dtype::bf16,
                Dtype::bf16);
  log += choice(128, 128, 64, false, 8, 8, "flash", "scalar", 8, 128, 0, 0, 8.0, Format::typed, Dtype::fp32,
                Dtype::bf16);
  log += choice(2048, 2048, 96, false, 8, 8, "blocked", "scalar", 32, 64, 0, 0, 5.0, Format::typed, Dtype::bf16,
                Dtype::bf16);
  log += choice(2048, 2048, 96, false, 8, 8, "simd", "scalar", 16, 32, 0, 0, 6.0, Format::typed);
  try {
    attune::tuner::write_atomic(argv[1], log);
    const auto parsed = attune::tuner::read_log(argv[1]);
    attune::tuner::write_atomic(argv[2], attune::tuner::generate_header(parsed, "tuned_fixture.json"));
    // The fleet: one fp32 entry (d_k 64, bucket 7/7, flash on scalar) per machine, block_q 3 for
    // the stand-in, 4 for this machine.
    std::vector<attune::detail::MachineTable> fleet(2);
    fleet[0].machine = {"Fleet Test AVX2 CPU", "avx2 sse4_2 scalar", 16, 32 << 10, 512 << 10, 32 << 20};
    fleet[1].machine = attune::machine_signature();
    for (int i = 0; i < 2; ++i) {
      auto& m = fleet[static_cast<std::size_t>(i)];
      m.id = "m" + std::to_string(i);
      m.signature = attune::build_signature();
      m.signature_text = attune::build_signature_text();
      m.provenance.command = "tuned_fixture_gen (synthetic fleet)";
      m.entries.push_back({64, false, false, false, 7, 7, "flash", "scalar", 3 + i, 64, 0, 0, 0, 1.0, 0.0, false});
      m.shapes.push_back("synthetic");
    }
    attune::tuner::write_atomic(argv[3], attune::tuner::generate_fleet_header(fleet, "tuned_fixture_gen"));
  } catch (const attune::Error& e) {
    std::fprintf(stderr, "tuned_fixture_gen: %s\n", e.what());
    return 1;
  }
  return 0;
}
