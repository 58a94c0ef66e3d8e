// The paper's features: Edge Impulse MFCC (version 2) exactly as docs/numerics.md specifies,
// stages 1-11, float32, computed frame by frame in a small caller-provided workspace.
//
// Typical use (the device):
//   static tinyfed::MfccWorkspace ws;           // sizeof = 1,672 bytes
//   tinyfed::mfcc_init(ws);                      // once
//   tinyfed::mfcc_compute(audio, features, ws);  // audio[16000] int16 -> features[650]
//
// The per-stage functions are public so that tests (tests/test_vectors.cpp) can check every
// stage in isolation against vectors/mfcc/; mfcc_compute is exactly their composition, and
// an optional MfccTrace records every intermediate of a whole-second run.
#pragma once

#include <stdint.h>

#include "fft.h"
#include "status.h"

namespace tinyfed {

constexpr int kSampleRate = 16000;    // MFCC spec: sample rate 16 kHz
constexpr int kAudioSamples = 16000;  // MFCC spec: input 16,000 int16 samples (1 s)
constexpr int kFrameLength = 320;     // MFCC spec: frame length 0.02 s * 16 kHz, stride the same
constexpr int kFrames = 50;           // MFCC stage 3: 16,000 / 320 frames, no padding
constexpr int kCoeffs = 13;           // MFCC spec: 13 cepstral coefficients
constexpr int kFeatures = kFrames * kCoeffs;  // 650 (MFCC stage 11; the paper's 13 x 50)
constexpr int kMelFilters = 32;       // MFCC spec: 32 filters
constexpr int kMelEdges = kMelFilters + 2;  // 34 edge points (MFCC stage 6)
constexpr int kNormWindow = 101;      // MFCC stage 10: normalisation window 101 frames
constexpr int kNormPad = (kNormWindow - 1) / 2;  // 50 rows of symmetric padding each side
constexpr int kNormColumn = kFrames + 2 * kNormPad;  // 150: one padded column (stage 10)
constexpr float kPreemphasis = 0.98f;  // MFCC stage 2 (float32, bit-exact with the vectors)
constexpr float kAudioScale = 1.0f / 32768.0f;  // MFCC stage 1 (exact power of two)
constexpr float kFltEpsilon = 1.1920929e-07f;   // MFCC stages 5, 6, 10: FLT_EPSILON
constexpr float kDctScale = 0.25f;    // MFCC stage 8: orthonormal DCT-II, sqrt(2/32) for k>0

// MFCC stage 6: FFT bin of each of the 34 mel edge points (floor(130 * hz / 16000), the
// speechpy "bins + 1" quirk). tests/test_vectors.cpp recomputes them from the mel formula and
// checks the whole 32x129 matrix they imply against vectors/mfcc/filterbank.f32.
constexpr uint8_t kMelEdgeBins[kMelEdges] = {2,  2,  3,  4,  4,  5,  6,  7,  8,  8,  9,  11,
                                             12, 13, 14, 16, 17, 19, 20, 22, 24, 26, 28, 31,
                                             33, 36, 38, 42, 45, 48, 52, 56, 60, 64};

// Working memory of mfcc_compute; the caller owns it (static on the board). 1,672 bytes.
struct MfccWorkspace {
  float frame[kFftLength];  // one frame's first 256 pre-emphasised samples, then its packed
                            // FFT; after the last frame, one padded 150-value column for stage 10
  float power[kFftBins];    // one frame's power spectrum (129 bins)
  float mel[kMelFilters];   // one frame's mel energies, then their logs
  uint32_t magic;           // kMfccMagic once mfcc_init has run
};

// Optional record of every intermediate of mfcc_compute (for tests and diagnostics). Each
// pointer may be null; shapes as in vectors/README.md, row-major.
struct MfccTrace {
  float* preemph;       // [16000] stage 2
  float* power;         // [50][129] stage 4
  float* frame_energy;  // [50] stage 5
  float* mel;           // [50][32] stage 6
  float* log_mel;       // [50][32] stage 7
  float* raw;           // [50][13] stages 8-9, before normalisation
};

// Prepares a workspace. No tables are computed at run time (the FFT twiddles and the filter
// bank are compile-time constants), so this only marks the workspace as ready.
Status mfcc_init(MfccWorkspace& ws);

// Stages 1-11: audio[16000] -> features[650] (features[13 * t + q]). `features` also holds the
// raw cepstra between stages 9 and 10, so no 650-float buffer is needed in the workspace.
// Errors: kBadArgument (null pointer), kBadState (workspace not initialised).
Status mfcc_compute(const int16_t* audio, float* features, MfccWorkspace& ws,
                    MfccTrace* trace = nullptr);

// ---- The stages, each usable on its own --------------------------------------------------

// Stages 1-2: out[i] = y[start + i] for i < count, y the circular pre-emphasis of the whole
// second (y[0] uses audio[15999]). Requires 0 <= start, start + count <= 16000.
Status mfcc_preemphasis(const int16_t* audio, int start, int count, float* out);

// Stage 4: power[k] = |X[k]|^2 / 256, k = 0..128, of the 256 samples in frame (overwritten
// by the packed FFT).
Status mfcc_power_spectrum(float* frame, float* power);

// Stage 5: sum of the 129 bins in order, FLT_EPSILON if exactly 0.
Status mfcc_frame_energy(const float* power, float* energy);

// Stage 6: mel[m] = sum_k power[k] * weight(m, k), FLT_EPSILON if exactly 0.
Status mfcc_mel_energies(const float* power, float* mel);

// Weight of FFT bin k in mel filter m (the filter bank matrix, 0 outside 0..31 x 0..128).
float mfcc_filter_weight(int m, int k);

// Natural log as the original computes it: Edge Impulse's fast polynomial ln (max error
// 1.6e-5 against the exact ln, MFCC stage 7), reproduced bit for bit. For a > 0 finite.
float mfcc_ln(float a);

// Stage 7: log_mel[m] = mfcc_ln(mel[m]); log_mel may alias mel.
Status mfcc_log_mel(const float* mel, float* log_mel);

// Stages 8-9: cepstra[0] = mfcc_ln(energy), cepstra[q] = orthonormal DCT-II of log_mel, q = 1..12.
Status mfcc_cepstra(const float* log_mel, float energy, float* cepstra);

// Stage 10, in place on cepstra[50][13]; column is scratch for kNormColumn (150) floats.
Status mfcc_normalize(float* cepstra, float* column);

}  // namespace tinyfed
