// How simd and flash order their ISAs for a problem (Kernel::order_isas): a dispatch rule of the
// library, not public API. `attune info` and the tests read it too.
#pragma once

namespace attune {

// From this bf16_dot_speedup() on, simd/flash prefer avx512_bf16 for problems its dot tiles run:
// they reach ~88% of either unit's peak, so the dot form wins from about 1.2x and 1.4x leaves a
// margin.
inline constexpr double kBf16DotPreferred = 1.4;

}  // namespace attune
