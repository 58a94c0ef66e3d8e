// The paper's 650-16-3 network: see nn.h. Expressions keep the original C++'s types: float
// everywhere, except the sigmoid (exp in double), the (1.0 - y) factors of the deltas (a
// double literal in the original) and the 0.33333 error constant.
#include "nn.h"

#include <math.h>

#include "fp_exact.h"  // last: bit-exact float rounding (no fused multiply-add)

namespace tinyfed {
namespace {

// ---- MT19937 as numpy's legacy RandomState (M. Matsumoto, T. Nishimura, mt19937ar.c) ------
constexpr int kMtN = 624;
constexpr int kMtM = 397;
constexpr uint32_t kMtMatrixA = 0x9908b0dfu;
constexpr uint32_t kMtUpper = 0x80000000u;
constexpr uint32_t kMtLower = 0x7fffffffu;

struct Mt19937 {
  uint32_t mt[kMtN];
  int index;
};

void mt_seed(Mt19937& g, uint32_t seed) {  // init_genrand
  g.mt[0] = seed;
  for (int i = 1; i < kMtN; ++i) {
    g.mt[i] = 1812433253u * (g.mt[i - 1] ^ (g.mt[i - 1] >> 30)) + static_cast<uint32_t>(i);
  }
  g.index = kMtN;
}

uint32_t mt_next(Mt19937& g) {  // genrand_int32
  if (g.index >= kMtN) {
    for (int i = 0; i < kMtN; ++i) {
      const uint32_t y = (g.mt[i] & kMtUpper) | (g.mt[(i + 1) % kMtN] & kMtLower);
      g.mt[i] = g.mt[(i + kMtM) % kMtN] ^ (y >> 1) ^ ((y & 1u) ? kMtMatrixA : 0u);
    }
    g.index = 0;
  }
  uint32_t y = g.mt[g.index++];
  y ^= y >> 11;
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  y ^= y >> 18;
  return y;
}

// numpy random_sample: 53-bit double in [0, 1) from two draws, (a >> 5, b >> 6).
double mt_next_double(Mt19937& g) {
  const uint32_t a = mt_next(g) >> 5;
  const uint32_t b = mt_next(g) >> 6;
  return (static_cast<double>(a) * 67108864.0 + static_cast<double>(b)) / 9007199254740992.0;
}

// ---- the network --------------------------------------------------------------------------
constexpr int kHiddenBias = kInputs * kHidden;   // offset of the hidden biases
constexpr int kOutputBias = kHidden * kOutputs;  // offset of the output biases (in the layer)

// The original: Hidden[i] = 1.0 / (1.0 + exp(-Accum)), Accum float, evaluated in double.
inline float sigmoid(float z) {
  return static_cast<float>(1.0 / (1.0 + exp(-static_cast<double>(z))));
}

// delta factor of the original: (a * y) * (1.0 - y), a * y in float, the rest in double.
inline float delta(float a, float y) {
  return static_cast<float>(static_cast<double>(a * y) * (1.0 - static_cast<double>(y)));
}

bool all_finite(const float* v, int n) {
  for (int i = 0; i < n; ++i) {
    if (!isfinite(v[i])) return false;
  }
  return true;
}

// Forward pass of the original: accumulate from the bias, in input order, in float.
void forward(const float* params, const float* x, float* hidden, float* outputs) {
  const float* w = params;
  float acc[kHidden];
  for (int i = 0; i < kHidden; ++i) acc[i] = w[kHiddenBias + i];
  for (int j = 0; j < kInputs; ++j) {  // j outer: the same per-unit order, contiguous rows
    const float xj = x[j];
    const float* row = w + j * kHidden;
    for (int i = 0; i < kHidden; ++i) acc[i] += xj * row[i];
  }
  for (int i = 0; i < kHidden; ++i) hidden[i] = sigmoid(acc[i]);

  const float* v = params + kHiddenParams;
  for (int i = 0; i < kOutputs; ++i) {
    float a = v[kOutputBias + i];
    for (int j = 0; j < kHidden; ++j) a += hidden[j] * v[j * kOutputs + i];
    outputs[i] = sigmoid(a);
  }
}

}  // namespace

Status nn_init_params(float* params, uint32_t seed) {
  if (params == nullptr) return Status::kBadArgument;
  Mt19937 g;  // 2,500 bytes of stack, only during this call
  mt_seed(g, seed);
  // numpy uniform(low, high): low + (high - low) * random_sample(), then astype(float32).
  constexpr double kLow = -0.5;
  constexpr double kRange = 1.0;
  for (int i = 0; i < kParams; ++i) {
    params[i] = static_cast<float>(kLow + kRange * mt_next_double(g));
  }
  return Status::kOk;
}

Status nn_forward(const float* params, const float* x, float* outputs) {
  if (params == nullptr || x == nullptr || outputs == nullptr) return Status::kBadArgument;
  if (!all_finite(x, kInputs)) return Status::kNonFinite;
  float hidden[kHidden];
  forward(params, x, hidden, outputs);
  return Status::kOk;
}

Status nn_train_step(float* params, float* velocity, const float* x, uint8_t label, float lr,
                     float momentum, float* loss_out, float* outputs_out) {
  if (params == nullptr || velocity == nullptr || x == nullptr) return Status::kBadArgument;
  if (label >= kOutputs) return Status::kBadArgument;
  if (!isfinite(lr) || !isfinite(momentum)) return Status::kBadArgument;
  if (!all_finite(x, kInputs)) return Status::kNonFinite;

  float hidden[kHidden];
  float out[kOutputs];
  forward(params, x, hidden, out);

  // Output deltas and the error, before any update.
  float out_delta[kOutputs];
  float error = 0.0f;
  for (int i = 0; i < kOutputs; ++i) {
    const float target = (i == label) ? 1.0f : 0.0f;
    const float diff = target - out[i];
    out_delta[i] = delta(diff, out[i]);
    // Error += 0.33333 * (T - O) * (T - O): double arithmetic, stored back into a float.
    error = static_cast<float>(static_cast<double>(error) +
                               kErrorScale * static_cast<double>(diff) *
                                   static_cast<double>(diff));
  }

  // Hidden deltas with the old output weights.
  float* v = params + kHiddenParams;
  float hid_delta[kHidden];
  for (int i = 0; i < kHidden; ++i) {
    float acc = 0.0f;
    for (int j = 0; j < kOutputs; ++j) acc += v[i * kOutputs + j] * out_delta[j];
    hid_delta[i] = delta(acc, hidden[i]);
  }

  // Hidden layer first: bias, then inputs 0..649 (each weight is independent, so walking the
  // memory in order gives the same numbers as the original's unit-major loop).
  float* w = params;
  float* dw = velocity;
  for (int i = 0; i < kHidden; ++i) {
    const int b = kHiddenBias + i;
    dw[b] = lr * hid_delta[i] + momentum * dw[b];
    w[b] += dw[b];
  }
  for (int j = 0; j < kInputs; ++j) {
    const float lx = lr * x[j];  // the original's left-to-right (lr * x) * delta
    for (int i = 0; i < kHidden; ++i) {
      const int k = j * kHidden + i;
      dw[k] = lx * hid_delta[i] + momentum * dw[k];
      w[k] += dw[k];
    }
  }

  // Output layer: bias, then hidden 0..15, with the pre-update hidden activations.
  float* dv = velocity + kHiddenParams;
  for (int i = 0; i < kOutputs; ++i) {
    const int b = kOutputBias + i;
    dv[b] = lr * out_delta[i] + momentum * dv[b];
    v[b] += dv[b];
  }
  for (int j = 0; j < kHidden; ++j) {
    const float lh = lr * hidden[j];
    for (int i = 0; i < kOutputs; ++i) {
      const int k = j * kOutputs + i;
      dv[k] = lh * out_delta[i] + momentum * dv[k];
      v[k] += dv[k];
    }
  }

  if (loss_out != nullptr) *loss_out = error;
  if (outputs_out != nullptr) {
    for (int i = 0; i < kOutputs; ++i) outputs_out[i] = out[i];
  }
  return Status::kOk;
}

int nn_detect(const float* outputs) {
  if (outputs == nullptr) return -1;
  int best = 0;
  for (int i = 1; i < kOutputs; ++i) {
    if (outputs[i] > outputs[best]) best = i;
  }
  return (outputs[best] > kDetectionThreshold) ? best : -1;
}

}  // namespace tinyfed
