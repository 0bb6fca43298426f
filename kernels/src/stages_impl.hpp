// Recording side of attune/stages.hpp.
#pragma once

#include <attune/stages.hpp>

namespace attune::detail {
// Adds one task's (or one packing pass's) ticks to the process totals.
void stages_add(const StageTicks& t);
}  // namespace attune::detail
