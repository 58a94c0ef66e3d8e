// Energy-centroid alignment of one second of audio (tinyfed's "centroid" feature pipeline,
// id 2; beyond the paper). Re-centres the recorded second on its energy centroid before the
// paper's MFCC runs, so that the network sees the word at the same place whatever the moment
// the user spoke it.
//
// Integer-only and bit-identical to the Python reference tinyfed/features/align.py; the shared
// vectors in vectors/align/ are checked by both (firmware/tests/test_align.cpp,
// tests/features/test_align.py):
//   1. e[b] = sum of x[n]^2 over 100 blocks of 160 samples (10 ms), int64;
//   2. floor = the kAlignFloorRank-th smallest e[b] (rank 0 = minimum);
//   3. w[b] = max(e[b] - floor, 0); centroid c = round-half-up(sum w[b] (160 b + 80) / sum w[b])
//      in int64; no weight above the floor (silence, constant level) -> shift 0;
//   4. shift = 8000 - c; out[n] = x[n - shift] where in range, else 0 (no wrap-around).
//
// Cost on the Cortex-M4: one pass of 16,000 multiply-accumulates into 64 bits (SMLAL), 10,000
// comparisons for the floor, 100 64-bit multiply-adds for the centroid and one memmove of at
// most 32,000 bytes; 800 bytes of stack (the 100 block energies), no heap, in place.
#pragma once

#include <stdint.h>

#include "status.h"

namespace tinyfed {

// One second at the board's 16 kHz PDM rate (the paper's recordings; core/mfcc.h).
constexpr uint32_t kAlignSamples = 16000;
// 10 ms blocks: fine enough against the MFCC's 20 ms frames, few enough for a cheap floor.
constexpr uint32_t kAlignBlock = 160;
constexpr uint32_t kAlignBlocks = kAlignSamples / kAlignBlock;  // 100
// Noise floor = 10th percentile of the block energies; chosen on held-out voices
// (docs/features.md). Must equal FLOOR_RANK in tinyfed/features/align.py.
constexpr uint32_t kAlignFloorRank = 10;
// The centroid is moved to the middle of the second.
constexpr int32_t kAlignCentre = static_cast<int32_t>(kAlignSamples / 2);

// Step 1: energies[b] = sum of squares of block b, b = 0..99.
Status align_block_energies(const int16_t* audio, uint32_t n, int64_t* energies,
                            uint32_t n_energies);

// Steps 1-3: the shift in samples (positive = the audio moves later) that centres the energy.
Status align_shift(const int16_t* audio, uint32_t n, int32_t* shift);

// Step 4: out[i] = audio[i - shift] (zero where i - shift is outside the clip), in place.
Status shift_samples(int16_t* audio, uint32_t n, int32_t shift);

// Steps 1-4 in place; *shift (may be null) receives the applied shift.
Status align_audio(int16_t* audio, uint32_t n, int32_t* shift);

}  // namespace tinyfed
