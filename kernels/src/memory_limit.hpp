// The working-memory limit shared by attention() and mha(): where it comes from, and the refusal
// that names both sizes. Internal; the CLI reads --max-memory with parse_bytes too.
#pragma once

#include <attune/attention.hpp>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace attune::detail {

// A byte count as ATTUNE_MAX_MEMORY and `--max-memory` take it: decimal digits with an optional
// K, M, G or T suffix (either case; powers of 1024), e.g. "1048576", "512M", "4G". nullopt when
// malformed, zero, or beyond size_t.
std::optional<std::size_t> parse_bytes(std::string_view text);
// "12.0 GiB", "512 bytes": the form error messages use.
std::string format_bytes(std::size_t bytes);

struct MemoryLimit {
  std::size_t bytes;
  std::string source;  // where the limit came from, for messages: "ATTUNE_MAX_MEMORY=4G", ...
};

// options.max_workspace_bytes, else ATTUNE_MAX_MEMORY (InvalidArgument if malformed), else half
// the physical memory.
MemoryLimit memory_limit(const Options& options);

// Throws MemoryError "<who> needs <need> of working memory, above the limit of <limit> (<source>)"
// when need exceeds the limit of `options`.
void require_workspace(const std::string& who, std::size_t need, const Options& options);

// The message for an allocation that failed although the limit allowed it.
std::string out_of_memory(const std::string& who, std::size_t need);

}  // namespace attune::detail
