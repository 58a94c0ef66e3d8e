// Energy-centroid alignment; see align.h for the definition. Integer arithmetic only, so the
// result is bit-identical to tinyfed/features/align.py on every platform.
#include "align.h"

#include <string.h>

namespace tinyfed {

namespace {

// Centre of block b in samples: 160 b + 80.
constexpr int64_t block_centre(uint32_t b) {
  return static_cast<int64_t>(b) * kAlignBlock + kAlignBlock / 2;
}

// The rank-th smallest of values[0..n) without reordering them (the caller still needs the
// block order): values[i] is it when fewer than rank+1 values are smaller and at least rank+1
// are smaller or equal. O(n^2) = 10,000 comparisons for 100 blocks, no extra buffer.
int64_t kth_smallest(const int64_t* values, uint32_t n, uint32_t rank) {
  for (uint32_t i = 0; i < n; ++i) {
    uint32_t less = 0;
    uint32_t less_or_equal = 0;
    for (uint32_t j = 0; j < n; ++j) {
      less += values[j] < values[i] ? 1u : 0u;
      less_or_equal += values[j] <= values[i] ? 1u : 0u;
    }
    if (less <= rank && rank < less_or_equal) return values[i];
  }
  return values[0];  // unreachable for rank < n
}

}  // namespace

Status align_block_energies(const int16_t* audio, uint32_t n, int64_t* energies,
                            uint32_t n_energies) {
  if (audio == nullptr || energies == nullptr) return Status::kBadArgument;
  if (n != kAlignSamples || n_energies != kAlignBlocks) return Status::kBadArgument;
  for (uint32_t b = 0; b < kAlignBlocks; ++b) {
    // 160 squares of at most 2^30 each: < 2^38, safe in int64.
    int64_t sum = 0;
    const int16_t* block = audio + b * kAlignBlock;
    for (uint32_t i = 0; i < kAlignBlock; ++i) {
      const int32_t s = block[i];
      sum += static_cast<int64_t>(s * s);
    }
    energies[b] = sum;
  }
  return Status::kOk;
}

Status align_shift(const int16_t* audio, uint32_t n, int32_t* shift) {
  if (shift == nullptr) return Status::kBadArgument;
  int64_t energies[kAlignBlocks];  // 800 bytes of stack
  const Status st = align_block_energies(audio, n, energies, kAlignBlocks);
  if (!ok(st)) return st;
  const int64_t floor = kth_smallest(energies, kAlignBlocks, kAlignFloorRank);
  // num < 2^38 * 100 * 16000 < 2^59, so 2 * num + den stays below 2^63.
  int64_t num = 0;
  int64_t den = 0;
  for (uint32_t b = 0; b < kAlignBlocks; ++b) {
    const int64_t w = energies[b] > floor ? energies[b] - floor : 0;
    num += w * block_centre(b);
    den += w;
  }
  if (den == 0) {
    *shift = 0;  // nothing above the floor: leave the audio where it is
    return Status::kOk;
  }
  // Round half up; both operands are non-negative, so truncation equals floor division.
  const int64_t centroid = (2 * num + den) / (2 * den);
  *shift = kAlignCentre - static_cast<int32_t>(centroid);
  return Status::kOk;
}

Status shift_samples(int16_t* audio, uint32_t n, int32_t shift) {
  if (audio == nullptr || n == 0) return Status::kBadArgument;
  const int64_t len = n;
  if (shift >= len || -static_cast<int64_t>(shift) >= len) {
    memset(audio, 0, n * sizeof(int16_t));
    return Status::kOk;
  }
  if (shift > 0) {
    const uint32_t s = static_cast<uint32_t>(shift);
    memmove(audio + s, audio, (n - s) * sizeof(int16_t));
    memset(audio, 0, s * sizeof(int16_t));
  } else if (shift < 0) {
    const uint32_t s = static_cast<uint32_t>(-static_cast<int64_t>(shift));
    memmove(audio, audio + s, (n - s) * sizeof(int16_t));
    memset(audio + (n - s), 0, s * sizeof(int16_t));
  }
  return Status::kOk;
}

Status align_audio(int16_t* audio, uint32_t n, int32_t* shift) {
  int32_t s = 0;
  const Status st = align_shift(audio, n, &s);
  if (!ok(st)) return st;
  if (shift != nullptr) *shift = s;
  return shift_samples(audio, n, s);
}

}  // namespace tinyfed
