// Working memory of the tiled driver (simd/driver.cpp), for the `simd` and `flash` kernels'
// Kernel::workspace_bytes.
#pragma once

#include "simd/driver.hpp"

#include <attune/isa.hpp>
#include <attune/problem.hpp>

#include <cstddef>

namespace attune::detail {

// What simd::run_tiled allocates for `plan` on `isa`: one 64-byte-aligned tile scratch per thread
// it runs and, with key-range splits, every task's partial O rows, running max and sum. It repeats
// the driver's sizing rules (threads capped by tasks and cores, rows per task, the tile that
// Config::micro or the row count picks): a change to the driver's allocations belongs here too.
std::size_t tiled_workspace_bytes(const Problem& p, const simd::Plan& plan, Isa isa);

}  // namespace attune::detail
