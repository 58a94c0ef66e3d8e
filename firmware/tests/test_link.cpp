// Checks the C++ frame codec (core/link) against the Python codec's vectors and a few
// properties of its own.
//
//   test_link VECTORS_DIR       (make -C firmware test passes the absolute ../vectors)
//
// Every line of VECTORS_DIR/link/frames.txt (written by `python -m tinyfed.link.gen` with
// tinyfed/link/frame.py) is fed byte by byte to link::FrameParser and must decode to the
// recorded result; the valid frames are re-encoded with link::encode_frame and must give the
// same wire bytes. A drift between the two codecs fails here.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "link.h"
#include "check.h"

using namespace tinyfed;
using namespace tinyfed::link;

namespace {

using tinyfed_test::check;
using tinyfed_test::g_checks;
using tinyfed_test::g_failures;

int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Parses hex into out; returns the byte count or -1. "-" is empty.
long unhex(const char* hex, uint8_t* out, size_t cap) {
  if (strcmp(hex, "-") == 0) return 0;
  const size_t n = strlen(hex);
  if (n % 2 != 0 || n / 2 > cap) return -1;
  for (size_t i = 0; i < n / 2; ++i) {
    const int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return -1;
    out[i] = static_cast<uint8_t>(hi * 16 + lo);
  }
  return static_cast<long>(n / 2);
}

struct Result {
  int frames = 0;
  int errors = 0;
  Frame frame{};
  uint8_t payload[kMaxPayload] = {0};
  ErrorCode error = ErrorCode::kBadCrc;
};

// Feeds bytes to a parser; records the last frame (payload copied) and error.
void feed(FrameParser& p, const uint8_t* data, size_t n, Result* r) {
  for (size_t i = 0; i < n; ++i) {
    const FrameParser::Event ev = p.push(data[i]);
    if (ev == FrameParser::Event::kFrame) {
      ++r->frames;
      r->frame = p.frame();
      memcpy(r->payload, p.frame().payload, p.frame().length);
      r->frame.payload = r->payload;
    } else if (ev == FrameParser::Event::kError) {
      ++r->errors;
      r->error = p.error();
    }
  }
}

void test_vectors(const char* dir) {
  printf("frame vectors (vectors/link/frames.txt)\n");
  char path[512];
  snprintf(path, sizeof path, "%s/link/frames.txt", dir);
  FILE* f = fopen(path, "r");
  check(f != nullptr, "vectors", "frames.txt opens");
  if (f == nullptr) return;
  static char line[8192];
  int cases = 0;
  while (fgets(line, sizeof line, f) != nullptr) {
    if (line[0] == '#' || line[0] == '\n') continue;
    char name[64], wire_hex[4096], kind[8], a[16], b[16];
    static char payload_hex[4096];
    const int got = sscanf(line, "%63s %4095s %7s %15s %15s %4095s", name, wire_hex, kind, a, b,
                           payload_hex);
    uint8_t wire[2048];
    const long wire_len = unhex(wire_hex, wire, sizeof wire);
    char label[160];
    if (got < 4 || wire_len <= 0) {
      snprintf(label, sizeof label, "%s: malformed vector line", name);
      check(false, "vectors", label);
      continue;
    }
    ++cases;
    FrameParser parser;
    Result r;
    feed(parser, wire, static_cast<size_t>(wire_len), &r);
    if (strcmp(kind, "ok") == 0 && got == 6) {
      uint8_t payload[kMaxPayload];
      const long plen = unhex(payload_hex, payload, sizeof payload);
      const bool same = r.frames == 1 && r.errors == 0 && r.frame.type == atoi(a) &&
                        r.frame.seq == atoi(b) && plen == r.frame.length &&
                        memcmp(payload, r.frame.payload, static_cast<size_t>(plen)) == 0;
      snprintf(label, sizeof label, "%s decodes to type %s seq %s, %ld payload bytes", name, a,
               b, plen);
      check(same, "decode", label);
      uint8_t out[kMaxFrameWire];
      const size_t n = encode_frame(static_cast<uint8_t>(atoi(a)), static_cast<uint16_t>(atoi(b)),
                                    payload, static_cast<size_t>(plen), out, sizeof out);
      snprintf(label, sizeof label, "%s re-encodes to the same %ld wire bytes", name, wire_len);
      check(n == static_cast<size_t>(wire_len) && memcmp(out, wire, n) == 0, "encode", label);
    } else if (strcmp(kind, "error") == 0) {
      const int code = atoi(a);
      snprintf(label, sizeof label, "%s is rejected with %s", name,
               error_name(static_cast<ErrorCode>(code)));
      check(r.frames == 0 && r.errors == 1 && static_cast<int>(r.error) == code, "decode",
            label);
    } else {
      snprintf(label, sizeof label, "%s: unknown vector kind %s", name, kind);
      check(false, "vectors", label);
    }
  }
  fclose(f);
  check(cases >= 15, "vectors", "at least 15 cases read");
}

void test_checksums() {
  printf("checksums\n");
  const uint8_t check9[] = {'1', '2', '3', '4', '5', '6', '7', '8', '9'};
  // The catalogue check values of both algorithms (reveng CRC catalogue).
  check(crc16(check9, 9) == 0x29B1, "crc16", "CRC-16/CCITT-FALSE(\"123456789\") == 0x29B1");
  check(crc32(check9, 9) == 0xCBF43926u, "crc32", "CRC-32(\"123456789\") == 0xCBF43926");
  check(crc32(check9 + 4, 5, crc32(check9, 4)) == 0xCBF43926u, "crc32",
        "chains like zlib.crc32(b, crc32(a))");
  check(crc32(check9, 0) == 0, "crc32", "CRC-32 of nothing is 0");
}

void test_cobs() {
  printf("COBS\n");
  static uint8_t in[600], enc[700], dec[700];
  bool all = true;
  const size_t sizes[] = {0, 1, 253, 254, 255, 508, 600};
  for (size_t n : sizes) {
    for (int pattern = 0; pattern < 3; ++pattern) {
      for (size_t i = 0; i < n; ++i) {
        in[i] = pattern == 0 ? 0 : pattern == 1 ? static_cast<uint8_t>(1 + i % 255)
                                                : static_cast<uint8_t>(i * 7 % 5);
      }
      const size_t e = cobs_encode(in, n, enc, sizeof enc);
      bool ok_run = e >= n + 1 && e <= n + 1 + n / 254 + 1 && memchr(enc, 0, e) == nullptr;
      size_t d = 0;
      ok_run = ok_run && ok(cobs_decode(enc, e, dec, sizeof dec, &d)) && d == n &&
               memcmp(in, dec, n) == 0;
      all = all && ok_run;
    }
  }
  check(all, "cobs", "round trip of 0..600 bytes: zeros, runs of 254+ non-zero, mixed");
  const uint8_t bad[] = {0x05, 0x01, 0x02};
  size_t d = 0;
  check(!ok(cobs_decode(bad, sizeof bad, dec, sizeof dec, &d)), "cobs",
        "a block running past the end is rejected");
  check(cobs_encode(in, 10, enc, 5) == 0, "cobs", "encoding into a short buffer returns 0");
}

void test_parser() {
  printf("parser\n");
  uint8_t frame_wire[kMaxFrameWire];
  const uint8_t payload[] = {1, 2, 3};
  const size_t n = encode_frame(0x01, 42, payload, sizeof payload, frame_wire, sizeof frame_wire);
  {
    FrameParser p;
    Result r;
    const uint8_t garbage[] = {0x13, 0x37, 0xFF, 0x00, 0x00, 0x00};
    feed(p, garbage, sizeof garbage, &r);
    feed(p, frame_wire, n, &r);
    check(r.errors == 1 && r.frames == 1 && r.frame.seq == 42, "resync",
          "garbage gives one error, then the next frame decodes");
  }
  {
    FrameParser p;
    Result r;
    static uint8_t longer[400];
    memset(longer, 0x5A, sizeof longer);
    feed(p, longer, sizeof longer, &r);
    const uint8_t zero = 0;
    feed(p, &zero, 1, &r);
    feed(p, frame_wire, n, &r);
    check(r.errors == 1 && r.error == ErrorCode::kOverflow && r.frames == 1, "overflow",
          "a 400-byte frame is one OVERFLOW, then the parser resyncs");
  }
  {
    FrameParser p;
    Result r;
    uint8_t cut[kMaxFrameWire];
    memcpy(cut, frame_wire, n);
    cut[n - 3] ^= 0x40;  // a flipped bit in the CRC (still non-zero in COBS)
    feed(p, cut, n, &r);
    check(r.errors == 1 && r.error == ErrorCode::kBadCrc && p.error_seq() == kUnknownSeq,
          "crc", "a flipped bit is BAD_CRC with an unknown seq");
  }
  {
    uint8_t big[kMaxPayload + 1] = {0};
    uint8_t out[kMaxFrameWire + 8];
    check(encode_frame(0x04, 0, big, kMaxPayload, out, sizeof out) <= kMaxFrameWire, "encode",
          "a full payload fits kMaxFrameWire");
    check(encode_frame(0x04, 0, big, kMaxPayload + 1, out, sizeof out) == 0, "encode",
          "a payload over kMaxPayload is refused");
    // A worst-case frame (no zero bytes at all) is exactly kMaxFrameWire on the wire and
    // must pass the parser.
    memset(big, 0xA5, sizeof big);
    const size_t w = encode_frame(0x04, 0x0101, big, kMaxPayload, out, sizeof out);
    FrameParser p;
    Result r;
    feed(p, out, w, &r);
    check(r.frames == 1 && r.frame.length == kMaxPayload, "parser",
          "the largest frame on the wire is accepted");
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s VECTORS_DIR\n", argv[0]);
    return 2;
  }
  test_vectors(argv[1]);
  test_checksums();
  test_cobs();
  test_parser();
  printf("test_link: %d checks, %d failed: %s\n", g_checks, g_failures,
         g_failures ? "FAIL" : "ok");
  return g_failures ? 1 : 0;
}
