// 256-point real FFT for the MFCC front end (MFCC stage 4, docs/numerics.md).
//
// Radix-2, in place, no allocation. The 256 real samples are transformed as a 128-point
// complex FFT of (x[2n] + i x[2n+1]) followed by the usual split into the real spectrum.
// All twiddles come from one 65-entry quarter-wave sine table evaluated at compile time
// (kSinQuarter256, 260 bytes of flash, 0 bytes of RAM); there is no init.
#pragma once

#include <stdint.h>

#include "status.h"

namespace tinyfed {

constexpr int kFftLength = 256;                 // MFCC spec: FFT length 256
constexpr int kFftBins = kFftLength / 2 + 1;    // 129 bins, k = 0..128
constexpr int kSinTableSize = kFftLength / 4 + 1;  // sin(2*pi*k/256), k = 0..64

// Compile-time quarter-wave sine table: kSinQuarter256.v[k] = sin(2*pi*k/256) as float.
struct SinTable {
  float v[kSinTableSize];
};
extern const SinTable kSinQuarter256;

// sin and cos of 2*pi*m/256 for any integer m (taken modulo 256), from the table.
float sin256(int m);
float cos256(int m);

// In-place real FFT of buf[256]. On return, packed spectrum:
//   buf[0] = Re X[0], buf[1] = Re X[128] (both purely real),
//   buf[2k] = Re X[k], buf[2k+1] = Im X[k] for k = 1..127.
// X[k] = sum_n x[n] exp(-2*pi*i*k*n/256) (no scaling).
Status rfft256(float* buf);

}  // namespace tinyfed
