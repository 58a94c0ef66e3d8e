// 256-point real FFT: see fft.h.
//
// The arithmetic is that of KISS FFT (kiss_fftr over a mixed-radix 4-4-4-2 kiss_fft of 128
// points), which the original Edge Impulse code uses on a host: every output is computed by
// the same float operations in the same order, so the power spectra match the reference
// vectors to the last bit or two. This matters for nearly empty mel bands (a pure tone, a
// chirp), whose energy is pure FFT rounding noise: a differently ordered FFT gives other noise
// and, after the log, errors up to 1e-3 (see docs/numerics.md). Unlike KISS FFT it works in
// place on the caller's buffer (digit-reversed permutation first, then the same butterflies
// stage by stage) and needs no allocated state: twiddles come from the compile-time table.
#include "fft.h"

#include "fp_exact.h"  // last: bit-exact float rounding (no fused multiply-add)

namespace tinyfed {
namespace {

constexpr int kHalf = kFftLength / 2;  // 128: length of the complex FFT

// -Os does not inline the small helpers below on its own; inlining them halves the FFT's
// instruction count on the M4F (bench/). Only a hint: any compiler is correct without it.
#if defined(__GNUC__)
#define TINYFED_INLINE inline __attribute__((always_inline))
#else
#define TINYFED_INLINE inline
#endif

// sin(x) for x in [0, pi/2] by its Taylor series, in double at compile time. 30 terms are far
// more than needed: the last term is below 1e-60, so the result is exact to double rounding.
constexpr double taylor_sin(double x) {
  double term = x;
  double sum = x;
  for (int n = 1; n < 30; ++n) {
    term *= -x * x / static_cast<double>((2 * n) * (2 * n + 1));
    sum += term;
  }
  return sum;
}

// pi as the nearest double, and the remainder pi - kPi (for the twiddles below).
constexpr double kPi = 3.141592653589793238462643383279502884;
constexpr double kPiLo = 1.2246467991473532e-16;

constexpr SinTable make_sin_table() {
  SinTable t{};
  for (int k = 0; k < kSinTableSize; ++k) {
    t.v[k] = static_cast<float>(taylor_sin(2.0 * kPi * static_cast<double>(k) / kFftLength));
  }
  t.v[kSinTableSize - 1] = 1.0f;  // sin(pi/2) exactly (the series gives 1 - 1e-16)
  return t;
}

struct Cpx {
  float r;
  float i;
};

// KISS FFT's twiddle j of a 128-point forward FFT: (float)cos(phase), (float)sin(phase) with
// the double phase = -2*pi*j/128. At j = 32 and 64 the rounded double phase is not exactly
// -pi/2 or -pi, so KISS FFT has tiny non-zero values where an exact table has 0; keep them.
TINYFED_INLINE Cpx twiddle(int j) {
  if (j == kHalf / 4) return {static_cast<float>(0.5 * kPiLo), -1.0f};  // cos(-kPi/2)
  if (j == kHalf / 2) return {-1.0f, static_cast<float>(-kPiLo)};      // sin(-kPi)
  return {cos256(2 * j), -sin256(2 * j)};
}

// kiss_fftr's super twiddle k (1..64): exp(-i*pi*(k/128 + 1/2)) = (-sin, -cos)(pi k / 128).
TINYFED_INLINE Cpx super_twiddle(int k) {
  if (k == kHalf / 2) return {-1.0f, static_cast<float>(-kPiLo)};  // phase exactly -kPi
  return {-sin256(k), -cos256(k)};
}

TINYFED_INLINE Cpx mul(Cpx a, Cpx b) { return {a.r * b.r - a.i * b.i, a.r * b.i + a.i * b.r}; }

// Where kiss_fft's recursion (factors 4, 4, 4, 2) leaves input i = q1 + 4 q2 + 16 q3 + 64 q4
// before the butterflies: position 32 q1 + 8 q2 + 2 q3 + q4.
TINYFED_INLINE int digit_reversed(int i) {
  return 32 * (i & 3) + 8 * ((i >> 2) & 3) + 2 * ((i >> 4) & 3) + ((i >> 6) & 1);
}

TINYFED_INLINE Cpx ld(const float* b, int k) { return {b[2 * k], b[2 * k + 1]}; }
TINYFED_INLINE void st(float* b, int k, Cpx v) {
  b[2 * k] = v.r;
  b[2 * k + 1] = v.i;
}

// kiss_fft's kf_bfly2 with m = 1 (the twiddle is exactly 1, as in KISS FFT's multiply).
TINYFED_INLINE void bfly2(float* b, int k) {
  const Cpx a = ld(b, k);
  const Cpx t = mul(ld(b, k + 1), twiddle(0));
  st(b, k + 1, {a.r - t.r, a.i - t.i});
  st(b, k, {a.r + t.r, a.i + t.i});
}

// kiss_fft's kf_bfly4 (forward) on complex values base..base+4m-1, operation for operation.
TINYFED_INLINE void bfly4(float* b, int base, int fstride, int m) {
  for (int k = 0; k < m; ++k) {
    const int i0 = base + k;
    Cpx a0 = ld(b, i0);
    const Cpx s0 = mul(ld(b, i0 + m), twiddle(k * fstride));
    const Cpx s1 = mul(ld(b, i0 + 2 * m), twiddle(2 * k * fstride));
    const Cpx s2 = mul(ld(b, i0 + 3 * m), twiddle(3 * k * fstride));
    const Cpx s5 = {a0.r - s1.r, a0.i - s1.i};
    a0.r += s1.r;
    a0.i += s1.i;
    const Cpx s3 = {s0.r + s2.r, s0.i + s2.i};
    const Cpx s4 = {s0.r - s2.r, s0.i - s2.i};
    st(b, i0 + 2 * m, {a0.r - s3.r, a0.i - s3.i});
    a0.r += s3.r;
    a0.i += s3.i;
    st(b, i0, a0);
    st(b, i0 + m, {s5.r + s4.i, s5.i - s4.r});
    st(b, i0 + 3 * m, {s5.r - s4.i, s5.i + s4.r});
  }
}

}  // namespace

// Declared extern in fft.h, so this constexpr definition has external linkage: one copy, in flash.
constexpr SinTable kSinQuarter256 = make_sin_table();

float sin256(int m) {
  m &= (kFftLength - 1);
  constexpr int q = kFftLength / 4;  // 64
  if (m <= q) return kSinQuarter256.v[m];
  if (m <= 2 * q) return kSinQuarter256.v[2 * q - m];
  if (m <= 3 * q) return -kSinQuarter256.v[m - 2 * q];
  return -kSinQuarter256.v[4 * q - m];
}

float cos256(int m) { return sin256(m + kFftLength / 4); }

Status rfft256(float* buf) {
  if (buf == nullptr) return Status::kBadArgument;
  // The 256 reals are 128 complex values z[n] = x[2n] + i x[2n+1] (kiss_fftr's view),
  // addressed through ld/st.

  // 1. In-place digit-reversed permutation, following cycles; a 128-bit "done" mask.
  uint32_t done[kHalf / 32] = {0u, 0u, 0u, 0u};
  for (int start = 0; start < kHalf; ++start) {
    if (done[start >> 5] & (1u << (start & 31))) continue;
    Cpx carried = ld(buf, start);
    int i = start;
    for (;;) {
      done[i >> 5] |= 1u << (i & 31);
      const int p = digit_reversed(i);
      if (p == start) break;
      const Cpx next = ld(buf, p);  // still holds input p (not yet moved)
      st(buf, p, carried);
      carried = next;
      i = p;
    }
    st(buf, start, carried);
  }

  // 2. Butterflies, innermost factor first: radix 2 (m = 1), then radix 4 with m = 2, 8, 32
  //    (KISS FFT's fstride = 128 / (p * m)).
  for (int k = 0; k < kHalf; k += 2) bfly2(buf, k);
  for (int m = 2; m <= kHalf / 4; m *= 4) {
    const int fstride = kHalf / (4 * m);
    for (int base = 0; base < kHalf; base += 4 * m) bfly4(buf, base, fstride, m);
  }

  // 3. kiss_fftr's split into the real spectrum, in place (X[k] and X[128-k] are computed
  //    from Z[k] and Z[128-k] together); X[128] is real and goes into buf[1].
  const Cpx dc = ld(buf, 0);
  buf[0] = dc.r + dc.i;
  buf[1] = dc.r - dc.i;
  for (int k = 1; k <= kHalf / 2; ++k) {
    const int j = kHalf - k;
    const Cpx fpk = ld(buf, k);
    const Cpx fpnk = {buf[2 * j], -buf[2 * j + 1]};
    const Cpx f1k = {fpk.r + fpnk.r, fpk.i + fpnk.i};
    const Cpx f2k = {fpk.r - fpnk.r, fpk.i - fpnk.i};
    const Cpx tw = mul(f2k, super_twiddle(k));
    // At k = 64 both writes go to the same bin and kiss_fftr keeps the second one.
    if (j != k) st(buf, k, {(f1k.r + tw.r) * 0.5f, (f1k.i + tw.i) * 0.5f});
    st(buf, j, {(f1k.r - tw.r) * 0.5f, (tw.i - f1k.i) * 0.5f});
  }
  return Status::kOk;
}

}  // namespace tinyfed
