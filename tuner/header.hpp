// The generated attune_tuned.h: the tuned table `auto` dispatch reads, from a tuning log.
#pragma once

#include "log.hpp"

#include <string>

namespace attune::tuner {

// attune_tuned.h from a log: its first provenance and the last choice per shape; one entry per
// table key (shapes sharing a key: the one with the most FLOPs wins). Deterministic: the same
// log text gives the same bytes.
std::string generate_header(const Log& log, const std::string& json_name);

}  // namespace attune::tuner
