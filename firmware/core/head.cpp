// The dscnn family's head, replay store and augmentation (docs/learning.md section 3): see head.h.
#include "head.h"

#include <math.h>
#include <string.h>

#include "fp_exact.h"  // last: no fused multiply-add, as the reference rounds

namespace tinyfed {
namespace {

constexpr int kFrames = kDscnnInH;  // 50 frames of
constexpr int kBands = kDscnnInW;   // 40 bands
constexpr int kNoiseOffset = 8;     // spec: n = (x >> 28) - 8, in [-8, 7]

// Working memory of head_record / head_decide: one augmented input, one int8 embedding and
// its float value, the probabilities (static: the board has no heap).
int8_t g_copy[kDscnnInput];
int8_t g_emb[kHeadDim];
float g_e[kHeadDim];
float g_probs[kHeadMaxClasses];

bool k_ok(int k) { return k >= 2 && k <= kHeadMaxClasses; }

int8_t sat8(int32_t v) {
  if (v > 127) return 127;
  if (v < -128) return -128;
  return static_cast<int8_t>(v);
}

}  // namespace

Status head_init(Head& head, int k) {
  if (!k_ok(k)) return Status::kBadArgument;
  memset(&head, 0, sizeof head);  // a new head starts at zeros; empty store, no recordings
  head.k = k;
  return Status::kOk;
}

Status head_forward(const float* params, int k, const float* e, float* probs, float* logits) {
  if (params == nullptr || e == nullptr || probs == nullptr || !k_ok(k)) {
    return Status::kBadArgument;
  }
  const float* b = params + k * kHeadDim;
  float z[kHeadMaxClasses];
  float zmax = 0.0f;
  for (int c = 0; c < k; ++c) {
    const float* w = params + c * kHeadDim;
    float sum = b[c];  // z[k] = b[k], then += W[k][j] e[j] for j ascending (the reference)
    for (int j = 0; j < kHeadDim; ++j) sum += w[j] * e[j];
    z[c] = sum;
    if (c == 0 || z[c] > zmax) zmax = z[c];
  }
  float total = 0.0f;
  for (int c = 0; c < k; ++c) {
    probs[c] = expf(z[c] - zmax);
    total += probs[c];
  }
  for (int c = 0; c < k; ++c) probs[c] /= total;
  if (logits != nullptr) {
    for (int c = 0; c < k; ++c) logits[c] = z[c];
  }
  return Status::kOk;
}

Status head_step(float* params, int k, const float* e, int y, float lr, float* loss) {
  if (params == nullptr || e == nullptr || !k_ok(k) || y < 0 || y >= k || !isfinite(lr)) {
    return Status::kBadArgument;
  }
  for (int j = 0; j < kHeadDim; ++j) {
    if (!isfinite(e[j])) return Status::kNonFinite;
  }
  float p[kHeadMaxClasses];
  const Status s = head_forward(params, k, e, p, nullptr);
  if (!ok(s)) return s;
  if (loss != nullptr) *loss = -logf(p[y] > kHeadProbFloor ? p[y] : kHeadProbFloor);
  float* b = params + k * kHeadDim;
  for (int c = 0; c < k; ++c) {
    const float g = lr * (p[c] - (c == y ? 1.0f : 0.0f));
    float* w = params + c * kHeadDim;
    for (int j = 0; j < kHeadDim; ++j) w[j] -= g * e[j];
    b[c] -= g;
  }
  return Status::kOk;
}

Status head_augment(const int8_t* in, int copy, int8_t* out) {
  if (in == nullptr || out == nullptr || copy < 1 || copy > 4 || in == out) {
    return Status::kBadArgument;
  }
  if (copy <= 2) {
    // Copy 1: frame t takes frame t + 3 (the word moves earlier); copy 2: frame t - 3.
    const int d = copy == 1 ? kHeadShift : -kHeadShift;
    for (int t = 0; t < kFrames; ++t) {
      int src = t + d;
      if (src < 0) src = 0;
      if (src > kFrames - 1) src = kFrames - 1;
      memcpy(out + t * kBands, in + src * kBands, kBands);
    }
    return Status::kOk;
  }
  uint32_t x = copy == 3 ? kHeadNoiseSeed1 : kHeadNoiseSeed2;
  for (int i = 0; i < kDscnnInput; ++i) {
    x = xorshift32(x);
    const int32_t n = static_cast<int32_t>(x >> 28) - kNoiseOffset;
    out[i] = sat8(static_cast<int32_t>(in[i]) + n);
  }
  return Status::kOk;
}

Status head_shuffle(uint16_t* order, int n, uint32_t seed) {
  if (order == nullptr || n < 0 || n > kHeadStoreSize) return Status::kBadArgument;
  for (int i = 0; i < n; ++i) order[i] = static_cast<uint16_t>(i);
  uint32_t x = seed;
  for (int i = n - 1; i >= 1; --i) {
    x = xorshift32(x);
    const uint32_t j = x % static_cast<uint32_t>(i + 1);
    const uint16_t t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  return Status::kOk;
}

Status head_store_add(Head& head, const int8_t* embedding, uint8_t label) {
  if (embedding == nullptr || head.next < 0 || head.next >= kHeadStoreSize) {
    return Status::kBadArgument;
  }
  memcpy(head.store[head.next], embedding, kHeadDim);
  head.labels[head.next] = label;
  head.next = (head.next + 1) % kHeadStoreSize;
  if (head.count < kHeadStoreSize) ++head.count;
  return Status::kOk;
}

Status head_replay_pass(Head& head, const DscnnWeights& wts, float lr, float* mean_loss) {
  Status s = head_shuffle(head.order, head.count, kHeadOrderSeed ^ head.recordings);
  if (!ok(s)) return s;
  float total = 0.0f;
  for (int i = 0; i < head.count; ++i) {
    const int slot = head.order[i];
    s = dscnn_embedding_float(head.store[slot], wts, g_e);
    if (!ok(s)) return s;
    float loss = 0.0f;
    s = head_step(head.params, head.k, g_e, head.labels[slot], lr, &loss);
    if (!ok(s)) return s;
    total += loss;
  }
  if (mean_loss != nullptr) {
    *mean_loss = head.count > 0 ? total / static_cast<float>(head.count) : 0.0f;
  }
  return Status::kOk;
}

Status head_record(Head& head, const int8_t* input, uint8_t label, const DscnnWeights& wts,
                   float lr, float* mean_loss, DscnnWork& work) {
  if (input == nullptr || !k_ok(head.k) || label >= head.k || !isfinite(lr)) {
    return Status::kBadArgument;
  }
  // All five extractions first: a failure leaves the store and the head untouched.
  static int8_t embeddings[kHeadCopies][kHeadDim];
  Status s = dscnn_extract(input, wts, embeddings[0], work);
  if (!ok(s)) return s;
  for (int copy = 1; copy < kHeadCopies; ++copy) {
    s = head_augment(input, copy, g_copy);
    if (!ok(s)) return s;
    s = dscnn_extract(g_copy, wts, embeddings[copy], work);
    if (!ok(s)) return s;
  }
  for (int copy = 0; copy < kHeadCopies; ++copy) {
    s = head_store_add(head, embeddings[copy], label);
    if (!ok(s)) return s;
  }
  ++head.recordings;
  return head_replay_pass(head, wts, lr, mean_loss);
}

Status head_decide(const Head& head, const int8_t* input, const DscnnWeights& wts,
                   float threshold, int* word, float* probs, DscnnWork& work) {
  if (input == nullptr || word == nullptr || !k_ok(head.k)) return Status::kBadArgument;
  Status s = dscnn_extract(input, wts, g_emb, work);
  if (!ok(s)) return s;
  s = dscnn_embedding_float(g_emb, wts, g_e);
  if (!ok(s)) return s;
  s = head_forward(head.params, head.k, g_e, g_probs, nullptr);
  if (!ok(s)) return s;
  int best = 0;
  for (int c = 1; c < head.k; ++c) {
    if (g_probs[c] > g_probs[best]) best = c;
  }
  *word = g_probs[best] >= threshold ? best : kHeadUnknown;
  if (probs != nullptr) {
    for (int c = 0; c < head.k; ++c) probs[c] = g_probs[c];
  }
  return Status::kOk;
}

}  // namespace tinyfed
