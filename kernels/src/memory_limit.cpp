// The working-memory limit: byte counts as text (ATTUNE_MAX_MEMORY, --max-memory, messages),
// the default of half the physical memory, and the refusal attention() and mha() raise.
#include "memory_limit.hpp"

#include "kernel_impl.hpp"

#include <attune/error.hpp>

#include <cstdio>
#include <cstdlib>
#include <limits>

#include <unistd.h>

namespace attune {
namespace detail {
namespace {

constexpr const char* kEnvironmentVariable = "ATTUNE_MAX_MEMORY";
// Used when the physical memory cannot be read (sysconf fails).
constexpr std::size_t kFallbackLimit = std::size_t{8} << 30;

// Half the physical memory: a call that needs more would push a machine doing anything else into
// swap or the OOM killer, and its caller gets a clear error instead.
std::size_t default_limit() {
  static const std::size_t bytes = [] {
    const long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGE_SIZE);
    if (pages <= 0 || page_size <= 0) return kFallbackLimit;
    return saturating_mul(static_cast<std::size_t>(pages), static_cast<std::size_t>(page_size)) / 2;
  }();
  return bytes;
}

std::string size_phrase(std::size_t bytes) {
  if (bytes == std::numeric_limits<std::size_t>::max()) return "more than " + format_bytes(bytes) + " (its size overflows 64 bits)";
  if (bytes < 1024) return format_bytes(bytes);
  return format_bytes(bytes) + " (" + std::to_string(bytes) + " bytes)";
}

}  // namespace

MemoryLimit memory_limit(const Options& options) {
  if (options.max_workspace_bytes > 0) {
    return {options.max_workspace_bytes, "Options::max_workspace_bytes / --max-memory"};
  }
  const char* text = std::getenv(kEnvironmentVariable);
  if (text != nullptr && *text != '\0') {
    const auto bytes = parse_bytes(text);
    if (!bytes) {
      throw InvalidArgument(std::string(kEnvironmentVariable) + " = '" + text +
                            "' is not a size: expected a positive number of bytes with an optional K, M, G "
                            "or T suffix (powers of 1024), e.g. 4G");
    }
    return {*bytes, std::string(kEnvironmentVariable) + "=" + text};
  }
  return {default_limit(),
          "the default, half the physical memory; raise it with Options::max_workspace_bytes / "
          "--max-memory or ATTUNE_MAX_MEMORY"};
}

void require_workspace(const std::string& who, std::size_t need, const Options& options) {
  const MemoryLimit limit = memory_limit(options);
  if (need <= limit.bytes) return;
  throw MemoryError(who + " needs " + size_phrase(need) + " of working memory, above the limit of " +
                    format_bytes(limit.bytes) + " (" + limit.source + ")");
}

std::string out_of_memory(const std::string& who, std::size_t need) {
  return who + " could not allocate its " + size_phrase(need) + " of working memory: out of memory";
}

std::optional<std::size_t> parse_bytes(std::string_view text) {
  std::size_t multiplier = 1;
  if (!text.empty()) {
    switch (text.back()) {
      case 'K': case 'k': multiplier = std::size_t{1} << 10; break;
      case 'M': case 'm': multiplier = std::size_t{1} << 20; break;
      case 'G': case 'g': multiplier = std::size_t{1} << 30; break;
      case 'T': case 't': multiplier = std::size_t{1} << 40; break;
      default: break;
    }
    if (multiplier > 1) text.remove_suffix(1);
  }
  if (text.empty()) return std::nullopt;
  std::size_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    if (__builtin_mul_overflow(value, std::size_t{10}, &value) ||
        __builtin_add_overflow(value, static_cast<std::size_t>(c - '0'), &value))
      return std::nullopt;
  }
  if (value == 0 || __builtin_mul_overflow(value, multiplier, &value)) return std::nullopt;
  return value;
}

std::string format_bytes(std::size_t bytes) {
  if (bytes < 1024) return std::to_string(bytes) + (bytes == 1 ? " byte" : " bytes");
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double scaled = static_cast<double>(bytes) / 1024.0;
  std::size_t unit = 0;
  while (scaled >= 1024.0 && unit + 1 < std::size(kUnits)) {
    scaled /= 1024.0;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, "%.1f %s", scaled, kUnits[unit]);
  return text;
}

}  // namespace detail

std::size_t workspace_limit(const Options& options) { return detail::memory_limit(options).bytes; }

}  // namespace attune
