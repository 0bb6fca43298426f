// The working-memory limit shared by attention() and mha(): where it comes from, and the refusal
// that names both sizes.
#pragma once

#include <attune/attention.hpp>

#include <cstddef>
#include <string>

namespace attune::detail {

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
