// Checks the portable numerics (core/fft, core/mfcc, core/nn) against the reference vectors
// made with the paper's original C++ (vectors/README.md).
//
//   test_vectors VECTORS_DIR       (make -C firmware test passes the absolute ../vectors)
//
// Prints one line per check (max error and tolerance) and a summary; exits 0 only if every
// check passes. MFCC tolerances follow docs/numerics.md ("Tolerances"); nn tolerances vectors/README.md.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "fft.h"
#include "mfcc.h"
#include "nn.h"

using namespace tinyfed;

namespace {

const char* g_dir = nullptr;
int g_checks = 0;
int g_failures = 0;

// ---- reporting -----------------------------------------------------------------------------

void check(const char* group, const char* name, double err, double tol, const char* unit) {
  const bool pass = (err <= tol) && !isnan(err);
  ++g_checks;
  if (!pass) ++g_failures;
  printf("  %-4s %-24s %-34s max %-9s %.3e  (tol %.1e)\n", pass ? "ok" : "FAIL", group, name,
         unit, err, tol);
}

void check_true(const char* group, const char* name, bool cond) {
  ++g_checks;
  if (!cond) ++g_failures;
  printf("  %-4s %-24s %s\n", cond ? "ok" : "FAIL", group, name);
}

void info(const char* group, const char* name, double err, const char* unit) {
  printf("  info %-24s %-34s max %-9s %.3e  (edge case, not a numeric target)\n", group, name,
         unit, err);
}

// ---- files ---------------------------------------------------------------------------------

// Reads exactly `bytes` bytes of dir/name into dst; false (and a FAIL) otherwise.
bool load(const char* sub, const char* name, void* dst, size_t bytes) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s/%s", g_dir, sub, name);
  FILE* f = fopen(path, "rb");
  bool good = false;
  if (f != nullptr) {
    const size_t got = fread(dst, 1, bytes, f);
    const int extra = fgetc(f);
    good = (got == bytes) && (extra == EOF);
    fclose(f);
  }
  if (!good) {
    printf("  FAIL cannot read %s (expected exactly %zu bytes)\n", path, bytes);
    ++g_checks;
    ++g_failures;
  }
  return good;
}

bool load_sig(const char* sig, const char* suffix, void* dst, size_t bytes) {
  char name[128];
  snprintf(name, sizeof name, "%s%s", sig, suffix);
  return load("mfcc", name, dst, bytes);
}

double max_abs_diff(const float* a, const float* b, int n) {
  double m = 0.0;
  for (int i = 0; i < n; ++i) {
    const double d = fabs(static_cast<double>(a[i]) - static_cast<double>(b[i]));
    if (!(d <= m)) m = d;  // also propagates NaN
  }
  return m;
}

// Max of |a - b| / |b| (0 where both are 0, infinite where only b is 0).
double max_rel_diff(const float* a, const float* b, int n) {
  double m = 0.0;
  for (int i = 0; i < n; ++i) {
    const double ref = static_cast<double>(b[i]);
    const double d = fabs(static_cast<double>(a[i]) - ref);
    const double rel = (d == 0.0) ? 0.0 : d / fabs(ref);
    if (!(rel <= m)) m = rel;
  }
  return m;
}

bool all_finite(const float* v, int n) {
  for (int i = 0; i < n; ++i) {
    if (!isfinite(v[i])) return false;
  }
  return true;
}

// ---- FFT and filter bank -------------------------------------------------------------------

void test_fft() {
  printf("fft\n");
  double table_err = 0.0;
  for (int k = 0; k < 256; ++k) {
    const double ref_s = sin(2.0 * M_PI * k / 256.0);
    const double ref_c = cos(2.0 * M_PI * k / 256.0);
    table_err = fmax(table_err, fabs(static_cast<double>(sin256(k)) - ref_s));
    table_err = fmax(table_err, fabs(static_cast<double>(cos256(k)) - ref_c));
  }
  check("fft", "sin/cos table vs libm", table_err, 6e-8, "abs");
  int table_bits = 0;  // the table must equal (float)sin(double), as KISS FFT's twiddles
  for (int k = 0; k <= 64; ++k) {
    if (kSinQuarter256.v[k] != static_cast<float>(sin(2.0 * M_PI * k / 256.0)) && k != 64) {
      ++table_bits;
    }
  }
  check_true("fft", "sin table == (float)sin(double)", table_bits == 0);

  // Random-ish input (an LCG) against a double-precision DFT; error relative to sum |x|^2.
  static float buf[256];
  double x[256];
  uint32_t s = 1u;
  double energy = 0.0;
  for (int n = 0; n < 256; ++n) {
    s = s * 1664525u + 1013904223u;
    x[n] = static_cast<double>(s >> 8) / 16777216.0 - 0.5;
    buf[n] = static_cast<float>(x[n]);
    x[n] = static_cast<double>(buf[n]);
    energy += x[n] * x[n];
  }
  check_true("fft", "rfft256(nullptr) is kBadArgument", rfft256(nullptr) == Status::kBadArgument);
  rfft256(buf);
  double err = 0.0;
  for (int k = 0; k <= 128; ++k) {
    double re = 0.0, im = 0.0;
    for (int n = 0; n < 256; ++n) {
      re += x[n] * cos(2.0 * M_PI * k * n / 256.0);
      im -= x[n] * sin(2.0 * M_PI * k * n / 256.0);
    }
    double gre, gim;
    if (k == 0) {
      gre = buf[0];
      gim = 0.0;
    } else if (k == 128) {
      gre = buf[1];
      gim = 0.0;
    } else {
      gre = buf[2 * k];
      gim = buf[2 * k + 1];
    }
    err = fmax(err, hypot(gre - re, gim - im));
  }
  check("fft", "rfft256 vs double DFT", err / sqrt(energy * 256.0), 1e-6, "rel");
}

void test_ln() {
  printf("ln\n");
  // MFCC stage 7: the original's fast ln has a max error of 1.6e-5 (absolute).
  double err = 0.0;
  for (float a = kFltEpsilon; a < 1e12f; a *= 1.0001f) {
    err = fmax(err, fabs(static_cast<double>(mfcc_ln(a)) - log(static_cast<double>(a))));
  }
  check("ln", "mfcc_ln vs ln, 1.2e-7..1e12", err, 1.6e-5, "abs");
}

void test_filterbank() {
  printf("filterbank\n");
  // Edge bins from the mel formula (MFCC stage 6), in double.
  const double mel_lo = 1127.0 * log(1.0 + 300.0 / 700.0);
  const double mel_hi = 1127.0 * log(1.0 + 8000.0 / 700.0);
  int bad_bins = 0;
  for (int i = 0; i < kMelEdges; ++i) {
    const double mel = mel_lo + (mel_hi - mel_lo) * i / (kMelEdges - 1);
    double hz = 700.0 * (exp(mel / 1127.0) - 1.0);
    hz = fmin(fmax(hz, 300.0), 8000.0);
    if (i == kMelEdges - 1) hz -= 0.001;
    const int bin = static_cast<int>(floor(130.0 * hz / 16000.0));
    if (bin != kMelEdgeBins[i]) ++bad_bins;
  }
  check_true("filterbank", "kMelEdgeBins == mel formula", bad_bins == 0);

  static float ref[kMelFilters * kFftBins];
  static float ours[kMelFilters * kFftBins];
  if (!load("mfcc", "filterbank.f32", ref, sizeof ref)) return;
  for (int m = 0; m < kMelFilters; ++m) {
    for (int k = 0; k < kFftBins; ++k) ours[m * kFftBins + k] = mfcc_filter_weight(m, k);
  }
  check("filterbank", "matrix vs filterbank.f32", max_abs_diff(ours, ref, kMelFilters * kFftBins),
        0.0, "abs");
}

// ---- MFCC ----------------------------------------------------------------------------------

constexpr double kUlp = 1.1920928955078125e-07;  // 2^-23: one float ulp, relative
// The DCT sums 32 float products (|L| up to ~25, sum of |L| ~ 500) directly; the original
// goes through a 32-point KISS FFT, so the rounding differs: 0.25 * 32 ulps of ~30 = 3e-5.
constexpr double kDctTol = 3e-5;

struct Reference {
  int16_t audio[kAudioSamples];
  float preemph[kAudioSamples];
  float power[kFrames * kFftBins];
  float energy[kFrames];
  float mel[kFrames * kMelFilters];
  float log_mel[kFrames * kMelFilters];
  float raw[kFeatures];
  float features[kFeatures];
};

Reference g_ref;
Reference g_got;  // audio unused
Reference g_iso;  // each stage computed from the reference output of the stage before

void test_signal(const char* sig, double feature_tol, bool edge_case) {
  printf("mfcc %s\n", sig);
  Reference& r = g_ref;
  bool good = load_sig(sig, ".i16", r.audio, sizeof r.audio);
  good = load_sig(sig, "_preemph.f32", r.preemph, sizeof r.preemph) && good;
  good = load_sig(sig, "_power_spectrum.f32", r.power, sizeof r.power) && good;
  good = load_sig(sig, "_frame_energy.f32", r.energy, sizeof r.energy) && good;
  good = load_sig(sig, "_mfe_power.f32", r.mel, sizeof r.mel) && good;
  good = load_sig(sig, "_log_mel.f32", r.log_mel, sizeof r.log_mel) && good;
  good = load_sig(sig, "_mfcc_raw.f32", r.raw, sizeof r.raw) && good;
  good = load_sig(sig, "_features.f32", r.features, sizeof r.features) && good;
  if (!good) return;

  // Whole pipeline, every intermediate traced.
  static MfccWorkspace ws;
  mfcc_init(ws);
  MfccTrace trace{g_got.preemph, g_got.power, g_got.energy, g_got.mel, g_got.log_mel, g_got.raw};
  const Status s = mfcc_compute(r.audio, g_got.features, ws, &trace);
  check_true(sig, "mfcc_compute returns kOk", s == Status::kOk);
  // Tolerances (docs/numerics.md): the FFT repeats the original's KISS FFT operation for
  // operation and ln is the original's, so the spectra differ only by the final |X|^2 (float
  // here, sqrt-in-double-then-square in the original): at most 1 ulp per bin. Everything after
  // inherits that 1e-7 relative noise.
  check("pipeline", "1-2 preemph", max_abs_diff(g_got.preemph, r.preemph, kAudioSamples), 0.0,
        "abs");
  check("pipeline", "4 power spectrum", max_rel_diff(g_got.power, r.power, kFrames * kFftBins),
        3 * kUlp, "rel");
  check("pipeline", "5 frame energy", max_rel_diff(g_got.energy, r.energy, kFrames), 1e-6, "rel");
  check("pipeline", "6 mel energies", max_rel_diff(g_got.mel, r.mel, kFrames * kMelFilters),
        1e-6, "rel");
  // Log mel values reach |25|, where 1 float ulp is 1.9e-6: allow 2 ulps.
  check("pipeline", "7 log mel", max_abs_diff(g_got.log_mel, r.log_mel, kFrames * kMelFilters),
        4e-6, "abs");
  check("pipeline", "8-9 raw cepstra", max_abs_diff(g_got.raw, r.raw, kFeatures), kDctTol,
        "abs");
  const double fe = max_abs_diff(g_got.features, r.features, kFeatures);
  if (edge_case) {
    info("pipeline", "10-11 features", fe, "abs");
    check_true("pipeline", "10-11 features all finite", all_finite(g_got.features, kFeatures));
  } else {
    check("pipeline", "10-11 FEATURES (MFCC spec tol)", fe, feature_tol, "abs");
  }

  // Each stage alone, fed with the reference output of the stage before.
  float frame[kFftLength];
  double pre_iso = 0.0;
  for (int t = 0; t < kFrames; ++t) {
    float pre[kFrameLength];
    mfcc_preemphasis(r.audio, kFrameLength * t, kFrameLength, pre);
    pre_iso = fmax(pre_iso, max_abs_diff(pre, r.preemph + kFrameLength * t, kFrameLength));
    memcpy(frame, r.preemph + kFrameLength * t, sizeof frame);
    mfcc_power_spectrum(frame, g_iso.power + kFftBins * t);
    mfcc_frame_energy(r.power + kFftBins * t, g_iso.energy + t);
    mfcc_mel_energies(r.power + kFftBins * t, g_iso.mel + kMelFilters * t);
    mfcc_log_mel(r.mel + kMelFilters * t, g_iso.log_mel + kMelFilters * t);
    mfcc_cepstra(r.log_mel + kMelFilters * t, r.energy[t], g_iso.raw + kCoeffs * t);
  }
  memcpy(g_iso.features, r.raw, sizeof g_iso.features);
  mfcc_normalize(g_iso.features, frame);
  check("isolated", "1-2 preemph (per frame)", pre_iso, 0.0, "abs");
  check("isolated", "4 power spectrum", max_rel_diff(g_iso.power, r.power, kFrames * kFftBins),
        3 * kUlp, "rel");
  check("isolated", "5 frame energy", max_rel_diff(g_iso.energy, r.energy, kFrames), 0.0, "rel");
  check("isolated", "6 mel energies", max_rel_diff(g_iso.mel, r.mel, kFrames * kMelFilters), 0.0,
        "rel");
  check("isolated", "7 log mel (bit-exact fast ln)",
        max_abs_diff(g_iso.log_mel, r.log_mel, kFrames * kMelFilters), 0.0, "abs");
  check("isolated", "8-9 raw cepstra", max_abs_diff(g_iso.raw, r.raw, kFeatures), kDctTol, "abs");
  const double ne = max_abs_diff(g_iso.features, r.features, kFeatures);
  if (edge_case) {
    info("isolated", "10 normalisation", ne, "abs");
    check_true("isolated", "10 normalisation all finite", all_finite(g_iso.features, kFeatures));
  } else {
    check("isolated", "10 normalisation", ne, 2e-6, "abs");
  }
}

void test_mfcc_api() {
  printf("mfcc api\n");
  static MfccWorkspace ws;
  memset(&ws, 0, sizeof ws);
  static int16_t audio[kAudioSamples];
  static float features[kFeatures];
  check_true("api", "uninitialised workspace is kBadState",
             mfcc_compute(audio, features, ws) == Status::kBadState);
  mfcc_init(ws);
  check_true("api", "null audio is kBadArgument",
             mfcc_compute(nullptr, features, ws) == Status::kBadArgument);
  check_true("api", "null features is kBadArgument",
             mfcc_compute(audio, nullptr, ws) == Status::kBadArgument);
  float out[4];
  check_true("api", "preemphasis past the end is kBadArgument",
             mfcc_preemphasis(audio, kAudioSamples - 2, 4, out) == Status::kBadArgument);
  // Full-scale square wave: the largest int16 input must stay finite.
  for (int n = 0; n < kAudioSamples; ++n) audio[n] = ((n / 8) & 1) ? 32767 : -32768;
  const Status s = mfcc_compute(audio, features, ws);
  check_true("api", "full-scale input gives finite features",
             s == Status::kOk && all_finite(features, kFeatures));
  printf("  info sizeof(MfccWorkspace) = %zu bytes\n", sizeof(MfccWorkspace));
}

// ---- network -------------------------------------------------------------------------------

float g_init[kParams];

void test_init() {
  printf("nn init\n");
  static float ref[kParams];
  bool good = load("nn", "init_hidden_weights.f32", ref, sizeof(float) * kHiddenParams);
  good = load("nn", "init_output_weights.f32", ref + kHiddenParams,
              sizeof(float) * kOutputParams) && good;
  check_true("init", "nn_init_params(12345) is kOk",
             nn_init_params(g_init, kDefaultSeed) == Status::kOk);
  if (!good) return;
  check("init", "hidden (bit-exact with numpy)", max_abs_diff(g_init, ref, kHiddenParams), 0.0,
        "abs");
  check("init", "output (bit-exact with numpy)",
        max_abs_diff(g_init + kHiddenParams, ref + kHiddenParams, kOutputParams), 0.0, "abs");
}

constexpr int kSteps = 40;  // vectors/README.md: 40 steps per scenario

struct Scenario {
  float inputs[kSteps * kInputs];
  int32_t labels[kSteps];
  float forward_init[kSteps * kOutputs];
  float error[kSteps];
  float out_backward[kSteps * kOutputs];
  float out_after[kSteps * kOutputs];
  float step1[kParams];
  float final_params[kParams];
};

bool load_nn(const char* sc, const char* suffix, void* dst, size_t bytes) {
  char name[128];
  snprintf(name, sizeof name, "%s_%s", sc, suffix);
  return load("nn", name, dst, bytes);
}

void test_scenario(const char* sc) {
  printf("nn scenario %s\n", sc);
  static Scenario r;
  constexpr size_t kOut = sizeof(float) * kSteps * kOutputs;
  bool good = load_nn(sc, "inputs.f32", r.inputs, sizeof r.inputs);
  good = load_nn(sc, "labels.i32", r.labels, sizeof r.labels) && good;
  good = load_nn(sc, "forward_init_outputs.f32", r.forward_init, kOut) && good;
  good = load_nn(sc, "step_error.f32", r.error, sizeof r.error) && good;
  good = load_nn(sc, "step_outputs_in_backward.f32", r.out_backward, kOut) && good;
  good = load_nn(sc, "step_outputs_forward_after.f32", r.out_after, kOut) && good;
  good = load_nn(sc, "step1_hidden_weights.f32", r.step1, sizeof(float) * kHiddenParams) && good;
  good = load_nn(sc, "step1_output_weights.f32", r.step1 + kHiddenParams,
                 sizeof(float) * kOutputParams) && good;
  good = load_nn(sc, "final_hidden_weights.f32", r.final_params, sizeof(float) * kHiddenParams) &&
         good;
  good = load_nn(sc, "final_output_weights.f32", r.final_params + kHiddenParams,
                 sizeof(float) * kOutputParams) && good;
  if (!good) return;

  static float params[kParams];
  static float velocity[kParams];
  float out[kSteps * kOutputs];
  for (int s = 0; s < kSteps; ++s) nn_forward(g_init, r.inputs + kInputs * s, out + kOutputs * s);
  check("forward", "init model outputs", max_abs_diff(out, r.forward_init, kSteps * kOutputs),
        1e-5, "abs");

  memcpy(params, g_init, sizeof params);
  memset(velocity, 0, sizeof velocity);
  float err[kSteps];
  float backward[kSteps * kOutputs];
  double step1_err = 0.0;
  bool all_ok = true;
  for (int s = 0; s < kSteps; ++s) {
    const float* x = r.inputs + kInputs * s;
    const Status st = nn_train_step(params, velocity, x, static_cast<uint8_t>(r.labels[s]),
                                    kDefaultLearningRate, kDefaultMomentum, err + s,
                                    backward + kOutputs * s);
    all_ok = all_ok && st == Status::kOk;
    nn_forward(params, x, out + kOutputs * s);
    if (s == 0) step1_err = max_abs_diff(params, r.step1, kParams);
  }
  check_true("train", "40 steps return kOk", all_ok);
  double rel = 0.0;
  for (int s = 0; s < kSteps; ++s) {
    const double ref = static_cast<double>(r.error[s]);
    rel = fmax(rel, fabs(static_cast<double>(err[s]) - ref) / fabs(ref));
  }
  check("train", "step error", max_abs_diff(err, r.error, kSteps), 1e-5, "abs");
  check("train", "step error (0.33333 visible)", rel, 3e-6, "rel");
  check("train", "outputs seen by the step", max_abs_diff(backward, r.out_backward,
        kSteps * kOutputs), 1e-5, "abs");
  check("train", "outputs after the step", max_abs_diff(out, r.out_after, kSteps * kOutputs), 1e-5,
        "abs");
  check("train", "params after step 1", step1_err, 1e-5, "abs");
  check("train", "params after 40 steps", max_abs_diff(params, r.final_params, kParams), 1e-5,
        "abs");
}

void test_nn_api() {
  printf("nn api\n");
  static float params[kParams];
  static float velocity[kParams];
  static float before_p[kParams];
  static float before_v[kParams];
  float x[kInputs];
  for (int j = 0; j < kInputs; ++j) x[j] = 0.01f * static_cast<float>(j % 7);
  memcpy(params, g_init, sizeof params);
  for (int i = 0; i < kParams; ++i) velocity[i] = 1e-3f;
  memcpy(before_p, params, sizeof params);
  memcpy(before_v, velocity, sizeof velocity);
  float loss = -1.0f;
  float out[kOutputs] = {-1.0f, -1.0f, -1.0f};
  auto unchanged = [&]() {
    return memcmp(params, before_p, sizeof params) == 0 &&
           memcmp(velocity, before_v, sizeof velocity) == 0 && loss == -1.0f && out[0] == -1.0f;
  };
  Status s = nn_train_step(params, velocity, x, 3, 0.3f, 0.9f, &loss, out);
  check_true("api", "label 3 is kBadArgument, nothing changed",
             s == Status::kBadArgument && unchanged());
  x[123] = NAN;
  s = nn_train_step(params, velocity, x, 1, 0.3f, 0.9f, &loss, out);
  check_true("api", "NaN input is kNonFinite, nothing changed",
             s == Status::kNonFinite && unchanged());
  x[123] = INFINITY;
  s = nn_train_step(params, velocity, x, 1, 0.3f, 0.9f, &loss, out);
  check_true("api", "inf input is kNonFinite, nothing changed",
             s == Status::kNonFinite && unchanged());
  s = nn_forward(params, x, out);
  check_true("api", "nn_forward of inf is kNonFinite", s == Status::kNonFinite && out[0] == -1.0f);
  x[123] = 0.0f;
  s = nn_train_step(params, velocity, x, 1, NAN, 0.9f, &loss, out);
  check_true("api", "NaN learning rate is kBadArgument", s == Status::kBadArgument && unchanged());
  s = nn_train_step(nullptr, velocity, x, 1, 0.3f, 0.9f, &loss, out);
  check_true("api", "null params is kBadArgument", s == Status::kBadArgument);
  s = nn_train_step(params, velocity, x, 2, 0.3f, 0.9f, nullptr, nullptr);
  check_true("api", "null loss/outputs allowed", s == Status::kOk);
  const float o1[kOutputs] = {0.1f, 0.7f, 0.5f};
  const float o2[kOutputs] = {0.5f, 0.59f, 0.2f};
  check_true("api", "nn_detect: best above 0.6", nn_detect(o1) == 1);
  check_true("api", "nn_detect: none above 0.6", nn_detect(o2) == -1);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s VECTORS_DIR\n", argv[0]);
    return 2;
  }
  g_dir = argv[1];
  printf("test_vectors: reference vectors in %s\n", g_dir);

  test_fft();
  test_ln();
  test_filterbank();
  // The MFCC spec's tolerances on the features: 1e-4 (noise, silence), 3e-4 (sine, chirp).
  test_signal("white_noise", 1e-4, false);
  test_signal("silence_tiny_noise", 1e-4, false);
  test_signal("sine1k_noise", 3e-4, false);
  test_signal("chirp", 3e-4, false);
  test_signal("zeros", 1e-4, true);
  test_mfcc_api();

  test_init();
  test_scenario("A");
  test_scenario("B");
  test_nn_api();

  printf("test_vectors: %d checks, %d failed: %s\n", g_checks, g_failures,
         g_failures == 0 ? "PASS" : "FAIL");
  return g_failures == 0 ? 0 : 1;
}
