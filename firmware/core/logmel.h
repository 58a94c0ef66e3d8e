// The dscnn family's features: pipeline "logmel40" (id 3), docs/learning.md section 1.
// One second of int16 audio -> the extractor's int8 input [50 frames][40 bands]:
//   1. energy-centroid alignment (align.h, in place on the audio, as the centroid pipeline);
//   2. the paper's pre-emphasis, framing and 129-bin power spectrum (mfcc.h's stages 1-4);
//   3. 40 mel bands from the generated float32 table (logmel_table.h), summed over the bins
//      in ascending order;
//   4. mfcc_ln(max(energy, 1e-10)), the paper's fast float32 log;
//   5. per-utterance normalisation over the 2,000 values (sequential float32 sums, sd >= 1e-3);
//   6. q = clamp(round_half_away(16 x), -128, 127).
// Python reference: tinyfed/features/logmel.py; vectors: vectors/dscnn/ (tests/test_dscnn.cpp).
//
// Memory: a static 8,000-byte float map and a 1,160-byte frame workspace inside logmel.cpp.
#pragma once

#include <stdint.h>

#include "status.h"

namespace tinyfed {

constexpr int kLogmelFrames = 50;  // the paper's framing: 16,000 / 320
constexpr int kLogmelBands = 40;   // spec step 3: 40 mel bands
constexpr int kLogmelValues = kLogmelFrames * kLogmelBands;  // 2,000
constexpr float kLogmelEnergyFloor = 1e-10f;  // spec step 4
constexpr float kLogmelSdFloor = 1e-3f;       // spec step 5
constexpr float kLogmelInputScale = 16.0f;    // spec step 6: scale 1/16, zero point 0

// Optional intermediates (tests): each may be null. shift: the alignment's shift in samples;
// log_mel: steps 1-4 [50][40]; normalised: step 5 [50][40].
struct LogmelTrace {
  int32_t* shift;
  float* log_mel;
  float* normalised;
};

// Steps 2-4 for one frame's power spectrum: power[129] -> log_mel[40].
Status logmel_bands(const float* power, float* log_mel);

// Step 5 in place on values[2000]. Errors: kBadArgument, kNonFinite.
Status logmel_normalise(float* values);

// Step 6: out[i] = clamp(round_half_away(16 x[i]), -128, 127). Errors: kBadArgument,
// kNonFinite (a non-finite x; out untouched).
Status logmel_quantise(const float* x, int n, int8_t* out);

// The float map of steps 3-5 (8,000 bytes): the caller's, like DscnnWork (core/device.h).
struct LogmelWork {
  float map[kLogmelValues];
};

// Steps 1-6: audio[16000] (aligned in place) -> out[2000] int8, in `work` (and a static frame
// and spectrum: not reentrant). Errors: kBadArgument (null), the stages' errors.
Status logmel40_compute(int16_t* audio, int8_t* out, LogmelWork& work,
                        LogmelTrace* trace = nullptr);

}  // namespace tinyfed
