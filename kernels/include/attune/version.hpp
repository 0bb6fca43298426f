// Version and build provenance of the compiled library.
#pragma once

#include <string_view>

namespace attune {

std::string_view version();        // "0.1.0"
std::string_view git_revision();   // "abc123def456[-dirty]" or "unknown"
std::string_view compiler();       // "GNU 12.2.0"
std::string_view compile_flags();  // flags of the library's build type
std::string_view build_type();     // "Release", ...

}  // namespace attune
