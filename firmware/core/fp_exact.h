// Include last in a .cpp whose floating-point results must be bit-exact: against the shared
// reference vectors, and between the host build and the board.
//
// Bit-exactness needs every a * b + c rounded twice, as written. GCC fuses multiply-adds by
// default in C++ on the Cortex-M4F (-ffp-contract=fast), which changes the last bits, so this
// turns contraction off for the rest of the translation unit. Explicit fmaf() calls stay fused.
#pragma once

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif
