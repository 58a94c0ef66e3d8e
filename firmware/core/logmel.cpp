// The logmel40 feature pipeline (docs/learning.md section 1): see logmel.h.
#include "logmel.h"

#include <math.h>
#include <string.h>

#include "align.h"
#include "fft.h"
#include "logmel_table.h"
#include "mfcc.h"
#include "fp_exact.h"  // last: bit-exact float rounding (no fused multiply-add)

namespace tinyfed {
namespace {

static_assert(kLogmelFrames == kFrames, "logmel40 uses the paper's 50 frames");
static_assert(logmel_table::kBands == kLogmelBands && logmel_table::kBins == kFftBins,
              "logmel_table.h is [40 bands][129 bins]");

// Static work buffers (the board has no heap): one frame's samples / packed FFT, its power
// spectrum, and the float map of the whole second.
float g_frame[kFftLength];
float g_power[kFftBins];

}  // namespace

Status logmel_bands(const float* power, float* log_mel) {
  if (power == nullptr || log_mel == nullptr) return Status::kBadArgument;
  using logmel_table::kFirstBin;
  using logmel_table::kLastBin;
  using logmel_table::kMelWeights;
  for (int m = 0; m < kLogmelBands; ++m) {
    // Only bins kFirstBin..kLastBin have non-zero weights; the others add exactly 0 to this
    // sum of non-negative terms, so the ascending sum is the same.
    float sum = 0.0f;
    for (int k = kFirstBin[m]; k <= kLastBin[m]; ++k) sum += kMelWeights[m][k] * power[k];
    log_mel[m] = mfcc_ln(sum > kLogmelEnergyFloor ? sum : kLogmelEnergyFloor);
  }
  return Status::kOk;
}

Status logmel_normalise(float* values) {
  if (values == nullptr) return Status::kBadArgument;
  constexpr float kN = static_cast<float>(kLogmelValues);
  float sum = 0.0f;
  for (int i = 0; i < kLogmelValues; ++i) sum += values[i];
  if (!isfinite(sum)) return Status::kNonFinite;
  const float mean = sum / kN;
  float sq = 0.0f;
  for (int i = 0; i < kLogmelValues; ++i) {
    const float d = values[i] - mean;
    sq += d * d;
  }
  float sd = sqrtf(sq / kN);
  if (!isfinite(sd)) return Status::kNonFinite;
  if (sd < kLogmelSdFloor) sd = kLogmelSdFloor;
  for (int i = 0; i < kLogmelValues; ++i) values[i] = (values[i] - mean) / sd;
  return Status::kOk;
}

Status logmel_quantise(const float* x, int n, int8_t* out) {
  if (x == nullptr || out == nullptr || n < 0) return Status::kBadArgument;
  for (int i = 0; i < n; ++i) {
    if (!isfinite(x[i])) return Status::kNonFinite;
  }
  for (int i = 0; i < n; ++i) {
    // 16 x is exact in float32 and roundf rounds halves away from zero, exactly.
    float q = roundf(x[i] * kLogmelInputScale);
    if (q > 127.0f) q = 127.0f;
    if (q < -128.0f) q = -128.0f;
    out[i] = static_cast<int8_t>(q);
  }
  return Status::kOk;
}

Status logmel40_compute(int16_t* audio, int8_t* out, LogmelWork& work, LogmelTrace* trace) {
  if (audio == nullptr || out == nullptr) return Status::kBadArgument;
  int32_t shift = 0;
  Status s = align_audio(audio, static_cast<uint32_t>(kAudioSamples), &shift);
  if (!ok(s)) return s;
  if (trace != nullptr && trace->shift != nullptr) *trace->shift = shift;
  for (int t = 0; t < kLogmelFrames; ++t) {
    // The paper's stages 1-4: the frame's first 256 pre-emphasised samples, power spectrum.
    s = mfcc_preemphasis(audio, kFrameLength * t, kFftLength, g_frame);
    if (!ok(s)) return s;
    s = mfcc_power_spectrum(g_frame, g_power);
    if (!ok(s)) return s;
    s = logmel_bands(g_power, work.map + kLogmelBands * t);
    if (!ok(s)) return s;
  }
  if (trace != nullptr && trace->log_mel != nullptr) memcpy(trace->log_mel, work.map, sizeof work.map);
  s = logmel_normalise(work.map);
  if (!ok(s)) return s;
  if (trace != nullptr && trace->normalised != nullptr) {
    memcpy(trace->normalised, work.map, sizeof work.map);
  }
  return logmel_quantise(work.map, kLogmelValues, out);
}

}  // namespace tinyfed
