// Edge Impulse MFCC v2 as docs/numerics.md specifies (stages 1-11): see mfcc.h.
#include "mfcc.h"

#include <math.h>
#include <string.h>

#include "fp_exact.h"  // last: bit-exact float rounding (no fused multiply-add)

namespace tinyfed {
namespace {

constexpr uint32_t kMfccMagic = 0x4d464343u;  // "MFCC": marks an initialised workspace
constexpr float kPowerScale = 1.0f / kFftLength;  // MFCC stage 4: |X|^2 / 256 (exact)

}  // namespace

float mfcc_ln(float a) {
  // Edge Impulse's numpy::log (after N. Juffa): split a = 2^e * m with m in [2/3, 4/3], then
  // log1p(m - 1) by a degree-5 polynomial with fused multiply-adds. Bit-exact with the
  // reference log_mel files. Positive finite inputs only (the callers guarantee >= FLT_EPSILON).
  int32_t g = 0;
  memcpy(&g, &a, sizeof g);
  const int32_t e = static_cast<int32_t>(
      (static_cast<uint32_t>(g) - 0x3f2aaaabu) & 0xff800000u);  // exponent, m in [2/3, 4/3]
  g -= e;
  float m = 0.0f;
  memcpy(&m, &g, sizeof m);
  const float i = static_cast<float>(e) * 1.19209290e-7f;  // e * 2^-23
  const float f = m - 1.0f;
  const float s = f * f;
  float r = fmaf(0.230836749f, f, -0.279208571f);
  const float t = fmaf(0.331826031f, f, -0.498910338f);
  r = fmaf(r, s, t);
  r = fmaf(r, s, f);
  return fmaf(i, 0.693147182f, r);  // + e * ln 2
}

Status mfcc_init(MfccWorkspace& ws) {
  for (float& v : ws.frame) v = 0.0f;
  for (float& v : ws.power) v = 0.0f;
  for (float& v : ws.mel) v = 0.0f;
  ws.magic = kMfccMagic;
  return Status::kOk;
}

Status mfcc_preemphasis(const int16_t* audio, int start, int count, float* out) {
  if (audio == nullptr || out == nullptr || start < 0 || count < 0 ||
      count > kAudioSamples - start) {
    return Status::kBadArgument;
  }
  for (int i = 0; i < count; ++i) {
    const int n = start + i;
    const int prev = (n == 0) ? kAudioSamples - 1 : n - 1;  // circular history (MFCC stage 2)
    const float x = static_cast<float>(audio[n]) * kAudioScale;
    const float xp = static_cast<float>(audio[prev]) * kAudioScale;
    out[i] = x - kPreemphasis * xp;
  }
  return Status::kOk;
}

Status mfcc_power_spectrum(float* frame, float* power) {
  if (frame == nullptr || power == nullptr) return Status::kBadArgument;
  const Status s = rfft256(frame);
  if (!ok(s)) return s;
  // MFCC spec: P = |X|^2 / 256 in float32. (The original takes |X| = sqrt in double, stores it
  // as a float and squares that; this differs by at most 1 ulp, and a double sqrt is software
  // on the M4F. See docs/numerics.md.)
  power[0] = frame[0] * frame[0] * kPowerScale;
  power[kFftBins - 1] = frame[1] * frame[1] * kPowerScale;
  for (int k = 1; k < kFftBins - 1; ++k) {
    const float re = frame[2 * k];
    const float im = frame[2 * k + 1];
    power[k] = (re * re + im * im) * kPowerScale;
  }
  return Status::kOk;
}

Status mfcc_frame_energy(const float* power, float* energy) {
  if (power == nullptr || energy == nullptr) return Status::kBadArgument;
  float sum = 0.0f;
  for (int k = 0; k < kFftBins; ++k) sum += power[k];
  *energy = (sum == 0.0f) ? kFltEpsilon : sum;
  return Status::kOk;
}

float mfcc_filter_weight(int m, int k) {
  if (m < 0 || m >= kMelFilters || k < 0 || k >= kFftBins) return 0.0f;
  const int l = kMelEdgeBins[m];
  const int c = kMelEdgeBins[m + 1];
  const int r = kMelEdgeBins[m + 2];
  if (k < l || k > r) return 0.0f;
  if (k == c) return 1.0f;  // the peak, also the whole filter when l = c = r
  if (k < c) return static_cast<float>(k - l) / static_cast<float>(c - l);
  return static_cast<float>(r - k) / static_cast<float>(r - c);
}

Status mfcc_mel_energies(const float* power, float* mel) {
  if (power == nullptr || mel == nullptr) return Status::kBadArgument;
  for (int m = 0; m < kMelFilters; ++m) {
    // Only bins l..r can be non-zero; summing them in k order gives the same float32 result
    // as the dense 129-term product (the skipped terms add exactly 0).
    float sum = 0.0f;
    for (int k = kMelEdgeBins[m]; k <= kMelEdgeBins[m + 2]; ++k) {
      sum += power[k] * mfcc_filter_weight(m, k);
    }
    mel[m] = (sum == 0.0f) ? kFltEpsilon : sum;
  }
  return Status::kOk;
}

Status mfcc_log_mel(const float* mel, float* log_mel) {
  if (mel == nullptr || log_mel == nullptr) return Status::kBadArgument;
  for (int m = 0; m < kMelFilters; ++m) log_mel[m] = mfcc_ln(mel[m]);
  return Status::kOk;
}

Status mfcc_cepstra(const float* log_mel, float energy, float* cepstra) {
  if (log_mel == nullptr || cepstra == nullptr) return Status::kBadArgument;
  if (!(energy > 0.0f)) return Status::kBadArgument;  // stage 5 guarantees energy > 0
  cepstra[0] = mfcc_ln(energy);  // stage 9: DC replaced by the log frame energy
  for (int q = 1; q < kCoeffs; ++q) {
    // DCT-II: sum_n L[n] cos(pi q (2n+1) / 64) = cos(2 pi * 2q(2n+1) / 256).
    float sum = 0.0f;
    for (int n = 0; n < kMelFilters; ++n) sum += log_mel[n] * cos256(2 * q * (2 * n + 1));
    cepstra[q] = sum * kDctScale;
  }
  return Status::kOk;
}

Status mfcc_normalize(float* cepstra, float* column) {
  if (cepstra == nullptr || column == nullptr) return Status::kBadArgument;
  constexpr float kWindow = static_cast<float>(kNormWindow);
  for (int q = 0; q < kCoeffs; ++q) {
    // The column padded symmetrically by 50 rows each side (numpy mode='symmetric'):
    // c49..c0, c0..c49, c49..c0.
    for (int t = 0; t < kFrames; ++t) {
      const float c = cepstra[kCoeffs * t + q];
      column[kNormPad + t] = c;
      column[kNormPad - 1 - t] = c;
      column[kNormPad + 2 * kFrames - 1 - t] = c;
    }
    for (int t = 0; t < kFrames; ++t) {
      // Window: padded rows t..t+100, float32 sequential mean and population std, computed
      // on the un-normalised values (column is never overwritten).
      const float* w = column + t;
      float sum = 0.0f;
      for (int r = 0; r < kNormWindow; ++r) sum += w[r];
      const float mean = sum / kWindow;
      float sq = 0.0f;
      for (int r = 0; r < kNormWindow; ++r) {
        const float d = w[r] - mean;
        sq += d * d;
      }
      const float std_dev = sqrtf(sq / kWindow);
      cepstra[kCoeffs * t + q] = (column[kNormPad + t] - mean) / (std_dev + kFltEpsilon);
    }
  }
  return Status::kOk;
}

Status mfcc_compute(const int16_t* audio, float* features, MfccWorkspace& ws,
                    MfccTrace* trace) {
  if (audio == nullptr || features == nullptr) return Status::kBadArgument;
  if (ws.magic != kMfccMagic) return Status::kBadState;
  Status s = Status::kOk;
  for (int t = 0; t < kFrames; ++t) {
    const int start = kFrameLength * t;  // stage 3: no overlap, no padding
    if (trace != nullptr && trace->preemph != nullptr) {
      float* full = trace->preemph + start;  // all 320 samples, for the trace only
      s = mfcc_preemphasis(audio, start, kFrameLength, full);
      if (!ok(s)) return s;
      for (int i = 0; i < kFftLength; ++i) ws.frame[i] = full[i];
    } else {
      // Stage 4 reads only the first 256 of the frame's 320 samples.
      s = mfcc_preemphasis(audio, start, kFftLength, ws.frame);
      if (!ok(s)) return s;
    }
    s = mfcc_power_spectrum(ws.frame, ws.power);
    if (!ok(s)) return s;
    float energy = 0.0f;
    s = mfcc_frame_energy(ws.power, &energy);
    if (!ok(s)) return s;
    s = mfcc_mel_energies(ws.power, ws.mel);
    if (!ok(s)) return s;
    if (trace != nullptr) {
      if (trace->power != nullptr) {
        for (int k = 0; k < kFftBins; ++k) trace->power[kFftBins * t + k] = ws.power[k];
      }
      if (trace->frame_energy != nullptr) trace->frame_energy[t] = energy;
      if (trace->mel != nullptr) {
        for (int m = 0; m < kMelFilters; ++m) trace->mel[kMelFilters * t + m] = ws.mel[m];
      }
    }
    s = mfcc_log_mel(ws.mel, ws.mel);
    if (!ok(s)) return s;
    if (trace != nullptr && trace->log_mel != nullptr) {
      for (int m = 0; m < kMelFilters; ++m) trace->log_mel[kMelFilters * t + m] = ws.mel[m];
    }
    s = mfcc_cepstra(ws.mel, energy, features + kCoeffs * t);
    if (!ok(s)) return s;
  }
  if (trace != nullptr && trace->raw != nullptr) {
    for (int i = 0; i < kFeatures; ++i) trace->raw[i] = features[i];
  }
  static_assert(kNormColumn <= kFftLength, "the normalisation column reuses ws.frame");
  return mfcc_normalize(features, ws.frame);
}

}  // namespace tinyfed
