// Run-time ISA detection and the ATTUNE_ISA cap.
#include <attune/error.hpp>
#include <attune/isa.hpp>

#include <algorithm>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

namespace attune {
namespace {

constexpr std::pair<Isa, std::string_view> kNames[] = {
    {Isa::scalar, "scalar"}, {Isa::sse4_2, "sse4_2"}, {Isa::avx2, "avx2"},
    {Isa::avx512, "avx512"}, {Isa::neon, "neon"}, {Isa::avx512_bf16, "avx512_bf16"},
    {Isa::amx, "amx"}};

std::string join(const std::vector<Isa>& isas) {
  std::string out;
  for (Isa isa : isas) out += (out.empty() ? "" : ", ") + std::string(to_string(isa));
  return out.empty() ? "none" : out;
}

#if defined(__x86_64__) || defined(__i386__)
// CPUID leaf 1, ECX bit 29 (clang 14's __builtin_cpu_supports has no "f16c").
bool has_f16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & (1u << 29)) != 0;
}
#endif

#if defined(__x86_64__) || defined(__i386__)
// CPUID leaf 7: AMX-BF16 (EDX bit 22) and AMX-TILE (EDX bit 24).
bool has_amx_bf16() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) != 0 && (edx & (1u << 22)) != 0 && (edx & (1u << 24)) != 0;
}

// Linux keeps the 8 KiB tile data state off until a process asks for it; without it the first
// tile instruction faults. Asked once per process; a refusal is one warning, then amx is not used.
bool amx_permitted() {
  static const bool permitted = [] {
#if defined(__linux__)
    constexpr long kArchReqXcompPerm = 0x1023;  // arch_prctl code (asm/prctl.h, Linux 5.16+)
    constexpr long kXfeatureXtiledata = 18;
    if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0) return true;
    std::fprintf(stderr, "attune: warning: Linux refused the AMX tile state (arch_prctl: %s); amx is not used\n",
                 std::strerror(errno));
#endif
    return false;
  }();
  return permitted;
}
#endif

std::vector<Isa> detect_runnable() {
  std::vector<Isa> out;
  for (Isa isa : compiled_isas()) {
    if (cpu_supports(isa)) out.push_back(isa);
  }
  const char* cap = std::getenv("ATTUNE_ISA");
  if (cap == nullptr || *cap == '\0') return out;
  const auto parsed = parse_isa(cap);
  if (!parsed) {
    throw InvalidArgument("ATTUNE_ISA = '" + std::string(cap) + "' is not an ISA name (runnable: " +
                          join(out) + ")");
  }
  const auto it = std::find(out.begin(), out.end(), *parsed);
  if (it == out.end()) {
    throw InvalidArgument("ATTUNE_ISA = '" + std::string(cap) +
                          "' cannot run here (runnable: " + join(out) + ")");
  }
  return std::vector<Isa>(it, out.end());  // the cap and everything below it
}

}  // namespace

std::string_view to_string(Isa isa) {
  for (const auto& [value, name] : kNames) {
    if (value == isa) return name;
  }
  return "unknown";
}

std::optional<Isa> parse_isa(std::string_view name) {
  for (const auto& [value, text] : kNames) {
    if (text == name) return value;
  }
  return std::nullopt;
}

bool cpu_supports(Isa isa) {
  switch (isa) {
    case Isa::scalar:
      return true;
#if defined(__x86_64__) || defined(__i386__)
    case Isa::sse4_2:
      return __builtin_cpu_supports("sse4.2");
    case Isa::avx2:
      // F16C: the fp16 conversions of the AVX2 build (every AVX2 CPU so far has it).
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c();
    case Isa::avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
    case Isa::avx512_bf16:  // + BW for the 16-bit permutes of the pair packing
      return cpu_supports(Isa::avx512) && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512bf16");
    case Isa::amx:  // the softmax and packing around the tiles use AVX-512 BF16
      return cpu_supports(Isa::avx512_bf16) && has_amx_bf16() && amx_permitted();
#endif
#if defined(__aarch64__)
    case Isa::neon:
      return true;  // Advanced SIMD is mandatory on AArch64.
#endif
    default:
      return false;
  }
}

const std::vector<Isa>& compiled_isas() {
  static const std::vector<Isa> isas = {
#define ATTUNE_ISA(name) Isa::name,
#define ATTUNE_MATRIX_ISA(name) Isa::name,
#include "isa_list.inc"
#undef ATTUNE_MATRIX_ISA
#undef ATTUNE_ISA
  };
  return isas;
}

const std::vector<Isa>& vector_isas() {
  static const std::vector<Isa> isas = [] {
    std::vector<Isa> out = compiled_isas();
    std::erase(out, Isa::amx);
    return out;
  }();
  return isas;
}

const std::vector<Isa>& runnable_isas() {
  static const std::vector<Isa> isas = detect_runnable();
  return isas;
}

Isa default_isa() {
  for (Isa isa : runnable_isas())
    if (isa != Isa::amx) return isa;
  return Isa::scalar;  // not reached: scalar is always runnable unless capped below it
}

void require_isa(Isa isa) {
  const auto& runnable = runnable_isas();
  if (std::find(runnable.begin(), runnable.end(), isa) != runnable.end()) return;
  const auto& compiled = compiled_isas();
  std::string why;
  if (std::find(compiled.begin(), compiled.end(), isa) == compiled.end()) {
    why = "is not compiled into this build";
  } else if (!cpu_supports(isa)) {
    why = "is not supported by this CPU";
  } else {
    why = "is above the ATTUNE_ISA cap";
  }
  throw InvalidArgument("isa '" + std::string(to_string(isa)) + "' " + why +
                        " (runnable: " + join(runnable) + ")");
}

std::string_view cpu_model() {
  static const std::string model = [] {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line)) {
      // x86: "model name"; some aarch64 kernels: "Model" or "CPU part" only.
      if (line.rfind("model name", 0) == 0 || line.rfind("Model", 0) == 0) {
        const auto colon = line.find(':');
        if (colon != std::string::npos) {
          auto value = line.substr(colon + 1);
          value.erase(0, value.find_first_not_of(" \t"));
          if (!value.empty()) return value;
        }
      }
    }
    return std::string("unknown");
  }();
  return model;
}

}  // namespace attune
