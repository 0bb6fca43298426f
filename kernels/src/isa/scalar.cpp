// Portable build of the same tile kernel, one float per "vector": runs on any CPU.
#include "simd/tile_impl.hpp"
ATTUNE_DEFINE_ISA_OPS(scalar, attune::simd::scalar_arch, 4, 4)
