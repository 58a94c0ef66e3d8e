// Checks firmware/core/align.cpp against the shared vectors made by the Python reference
// (vectors/align/, see its README.md). Usage: test_align VECTORS_DIR; exit code 0 on success.
// Every case named in cases.txt must give bit-identical block energies, shift and output.
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "align.h"

namespace {

using tinyfed::Status;

constexpr size_t kMaxPath = 512;
constexpr size_t kMaxName = 128;

int g_failures = 0;

void fail(const char* name, const char* what) {
  printf("FAIL %s: %s\n", name, what);
  ++g_failures;
}

// Reads exactly `count` little-endian values of `size` bytes; false if the file differs.
bool read_exact(const char* dir, const char* name, const char* suffix, void* out, size_t size,
                size_t count) {
  char path[kMaxPath];
  snprintf(path, sizeof path, "%s/align/%s%s", dir, name, suffix);
  FILE* f = fopen(path, "rb");
  if (f == nullptr) {
    printf("cannot open %s\n", path);
    return false;
  }
  const size_t got = fread(out, size, count, f);
  const bool at_end = fgetc(f) == EOF;
  fclose(f);
  if (got != count || !at_end) {
    printf("%s: expected exactly %zu values of %zu bytes\n", path, count, size);
    return false;
  }
  return true;  // the host is little-endian (x86-64, AArch64), like the files
}

void check_case(const char* dir, const char* name) {
  static int16_t audio[tinyfed::kAlignSamples];
  static int16_t expected[tinyfed::kAlignSamples];
  int64_t energies[tinyfed::kAlignBlocks];
  int64_t expected_energies[tinyfed::kAlignBlocks];
  int32_t expected_shift = 0;
  if (!read_exact(dir, name, ".i16", audio, sizeof audio[0], tinyfed::kAlignSamples) ||
      !read_exact(dir, name, "_aligned.i16", expected, sizeof expected[0],
                  tinyfed::kAlignSamples) ||
      !read_exact(dir, name, "_energies.i64", expected_energies, sizeof expected_energies[0],
                  tinyfed::kAlignBlocks) ||
      !read_exact(dir, name, "_shift.i32", &expected_shift, sizeof expected_shift, 1)) {
    fail(name, "vector files missing or malformed");
    return;
  }

  if (!tinyfed::ok(tinyfed::align_block_energies(audio, tinyfed::kAlignSamples, energies,
                                                 tinyfed::kAlignBlocks))) {
    fail(name, "align_block_energies did not return kOk");
    return;
  }
  for (uint32_t b = 0; b < tinyfed::kAlignBlocks; ++b) {
    if (energies[b] != expected_energies[b]) {
      printf("  block %u: energy %lld, expected %lld\n", b, static_cast<long long>(energies[b]),
             static_cast<long long>(expected_energies[b]));
      fail(name, "block energies differ");
      return;
    }
  }

  int32_t shift = 0;
  if (!tinyfed::ok(tinyfed::align_audio(audio, tinyfed::kAlignSamples, &shift))) {
    fail(name, "align_audio did not return kOk");
    return;
  }
  if (shift != expected_shift) {
    printf("  shift %ld, expected %ld\n", static_cast<long>(shift),
           static_cast<long>(expected_shift));
    fail(name, "shift differs");
  }
  for (uint32_t i = 0; i < tinyfed::kAlignSamples; ++i) {
    if (audio[i] != expected[i]) {
      printf("  sample %u: %d, expected %d\n", i, audio[i], expected[i]);
      fail(name, "aligned audio differs");
      return;
    }
  }
  printf("ok   %s (shift %ld)\n", name, static_cast<long>(shift));
}

void check_bad_arguments() {
  static int16_t audio[tinyfed::kAlignSamples];
  int32_t shift = 0;
  if (tinyfed::align_audio(nullptr, tinyfed::kAlignSamples, &shift) != Status::kBadArgument) {
    fail("arguments", "null audio accepted");
  }
  if (tinyfed::align_audio(audio, tinyfed::kAlignSamples - 1, &shift) != Status::kBadArgument) {
    fail("arguments", "a clip of 15,999 samples accepted");
  }
  if (tinyfed::align_shift(audio, tinyfed::kAlignSamples, nullptr) != Status::kBadArgument) {
    fail("arguments", "null shift output accepted");
  }
  int64_t energies[tinyfed::kAlignBlocks];
  if (tinyfed::align_block_energies(audio, tinyfed::kAlignSamples, energies, 10) !=
      Status::kBadArgument) {
    fail("arguments", "a 10-entry energy buffer accepted");
  }
}

void check_shift_bounds() {
  // A shift of the whole length or more empties the clip; nothing wraps around.
  int16_t x[4] = {1, 2, 3, 4};
  if (!tinyfed::ok(tinyfed::shift_samples(x, 4, 2)) || x[0] != 0 || x[1] != 0 || x[2] != 1 ||
      x[3] != 2) {
    fail("shift_samples", "shift by +2 of {1,2,3,4} is not {0,0,1,2}");
  }
  int16_t y[4] = {1, 2, 3, 4};
  if (!tinyfed::ok(tinyfed::shift_samples(y, 4, -1)) || y[0] != 2 || y[1] != 3 || y[2] != 4 ||
      y[3] != 0) {
    fail("shift_samples", "shift by -1 of {1,2,3,4} is not {2,3,4,0}");
  }
  int16_t z[4] = {1, 2, 3, 4};
  if (!tinyfed::ok(tinyfed::shift_samples(z, 4, -4)) || z[0] != 0 || z[1] != 0 || z[2] != 0 ||
      z[3] != 0) {
    fail("shift_samples", "shift by -4 of 4 samples does not empty the clip");
  }
  printf("ok   shift_samples bounds\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    printf("usage: %s VECTORS_DIR\n", argc > 0 ? argv[0] : "test_align");
    return 2;
  }
  char path[kMaxPath];
  snprintf(path, sizeof path, "%s/align/cases.txt", argv[1]);
  FILE* cases = fopen(path, "r");
  if (cases == nullptr) {
    printf("FAIL cannot open %s\n", path);
    return 1;
  }
  char name[kMaxName];
  int n_cases = 0;
  while (fgets(name, sizeof name, cases) != nullptr) {
    name[strcspn(name, "\r\n")] = '\0';
    if (name[0] == '\0') continue;
    check_case(argv[1], name);
    ++n_cases;
  }
  fclose(cases);
  if (n_cases == 0) fail("cases.txt", "no cases listed");
  check_bad_arguments();
  check_shift_bounds();
  if (g_failures != 0) {
    printf("test_align: %d failure(s)\n", g_failures);
    return 1;
  }
  printf("test_align: %d cases passed\n", n_cases);
  return 0;
}
