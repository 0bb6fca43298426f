// Version and build provenance, filled in by the build (see cmake/BuildInfo.cmake).
#include <attune/version.hpp>

#include "build_info.inc"

namespace attune {

std::string_view version() { return ATTUNE_VERSION; }
std::string_view git_revision() { return ATTUNE_GIT_REVISION; }
std::string_view compiler() { return ATTUNE_COMPILER; }
std::string_view compile_flags() { return ATTUNE_COMPILE_FLAGS; }
std::string_view build_type() { return ATTUNE_BUILD_TYPE; }

}  // namespace attune
