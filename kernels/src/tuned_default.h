// The committed default tuned table: no entries, so `auto` uses the built-in defaults (the
// highest-ranked runnable kernel, its default tiles). Configure with
// -DATTUNE_TUNED_CONFIG=/path/attune_tuned.h (written by `attune tune`) to compile a tuned
// table in instead; an empty signature means "no table" and is never checked.
#pragma once

#include <attune/tuned.hpp>

#include <array>

namespace attune::tuned_data {

constexpr char kSignature[] = "";
constexpr char kSignatureText[] = "";

constexpr TunedProvenance kProvenance = {
    /* cpu */ "", /* isas */ "", /* cores */ "", /* compiler */ "", /* flags */ "",
    /* version */ "", /* git_revision */ "", /* date */ "", /* strategy */ "", /* budget */ "",
    /* command */ "none (built-in defaults)"};

constexpr std::array<TunedEntry, 0> kEntries = {};

}  // namespace attune::tuned_data
