// The tuned table as dispatch sees it: the compiled table once its signature was checked and
// its unusable entries (ISA not runnable here, kernel not registered) were set aside.
#pragma once

#include <attune/isa.hpp>
#include <attune/tuned.hpp>

#include <optional>

namespace attune::detail {

// The entry `auto` uses for a problem, or nullptr (no table, no entry with these exact keys and
// storage types, or none whose kernel takes the problem on its ISA, or none with the forced
// ISA). Checks the table and warns on first use.
const TunedEntry* tuned_entry(const Problem& problem, std::optional<Isa> forced_isa);

// Replaces the table dispatch reads (nullptr: back to the compiled one) and re-arms the
// start-up check and its warnings. For tests; not thread-safe against concurrent resolve().
void use_tuned_table(const TunedTable* table);

}  // namespace attune::detail
