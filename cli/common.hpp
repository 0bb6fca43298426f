// What the command files share: the flags that choose and configure a kernel, and small checks
// of the command line.
#pragma once

#include "args.hpp"

#include <attune/attention.hpp>
#include <attune/dtype.hpp>
#include <attune/problem.hpp>

#include <set>
#include <string>

namespace attune::cli {

// --kernel/--isa/--threads/--block-q/--block-kv/--kv-splits/--micro, shared by every command
// that runs a kernel.
extern const std::set<std::string> kRunFlags;

// The Options those flags (and --max-memory, where a command takes it) give. UsageError for an
// unknown kernel or ISA, a (kernel, isa) pair `attune kernels` does not list, a malformed value;
// a malformed ATTUNE_MAX_MEMORY fails here too, before any file is read.
Options parse_options(const Args& a);

// The union of two flag sets.
std::set<std::string> with(std::set<std::string> a, const std::set<std::string>& b);

// UsageError if the command line has a positional argument.
void no_positional(const Args& a);

// A small problem stored as `dtype` (Q, O) and `kv_dtype` (K, V): what `attune kernels` and the
// command-line checks ask Kernel::supports() about. attention() asks again with the real shape.
Problem typed_probe(Dtype dtype, Dtype kv_dtype);

}  // namespace attune::cli
