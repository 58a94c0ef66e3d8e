// The link protocol's frame codec: CRC-16/CCITT-FALSE, COBS, an incremental frame parser
// that resynchronises after garbage, a frame builder, CRC-32 (IEEE) for transfers, and
// little-endian field helpers. Byte-exact with tinyfed/link/frame.py (the Python codec); the
// wire format, message types and field offsets come from link_spec.h, which is generated from
// tinyfed/link/spec.py. tests/test_link.cpp checks both against vectors/link/frames.txt.
//
// No heap, no STL: every buffer is owned by the caller or is a fixed member.
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "link_spec.h"
#include "status.h"

namespace tinyfed {
namespace link {

// Largest raw frame (header + payload + CRC) before COBS: 6 + 232 + 2 = 240 bytes.
constexpr size_t kMaxFrameRaw = kHeaderBytes + kMaxPayload + kCrcBytes;
static_assert(kMaxFrameRaw + 2 == kMaxFrameWire, "COBS adds 1 byte per 254, plus delimiter");
// kUnknownSeq (link_spec.h): the ref_seq of ERROR frames answering a frame whose own seq
// cannot be trusted (COBS, CRC or overflow errors).

// The little-endian field helpers (put_u8 ... get_f32) are in le.h (through link_spec.h).

// ---- checksums ---------------------------------------------------------------------------

// CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor (spec.py).
uint16_t crc16(const uint8_t* data, size_t n, uint16_t crc = 0xFFFF);

// CRC-32 (IEEE 802.3, reflected poly 0xEDB88320), chainable exactly like zlib.crc32:
// crc32(b, crc32(a)) == crc32(a + b); start with 0. Table-free (no RAM, ~10 cycles/bit).
uint32_t crc32(const uint8_t* data, size_t n, uint32_t crc = 0);

// ---- COBS --------------------------------------------------------------------------------

// Encodes n bytes into out (no zero byte in the result, no delimiter appended). Returns the
// encoded length, or 0 if it does not fit cap (the encoding needs n + 1 + n / 254 bytes).
size_t cobs_encode(const uint8_t* in, size_t n, uint8_t* out, size_t cap);

// Decodes n COBS bytes (no delimiter) into out. kOk and *out_len, kBadArgument for an
// invalid encoding (a zero byte, a block running past the end), kOverflow if out is too small.
Status cobs_decode(const uint8_t* in, size_t n, uint8_t* out, size_t cap, size_t* out_len);

// ---- frames ------------------------------------------------------------------------------

// A decoded frame. `payload` points into the decoder's buffer and stays valid until the next
// byte is pushed into the parser that produced it.
struct Frame {
  uint8_t type;
  uint16_t seq;
  const uint8_t* payload;
  uint16_t length;
};

// Decodes the COBS bytes of one frame (without its delimiter), checking in the Python codec's
// order: size (kOverflow), COBS (kBadEncoding), minimum length (kBadLength), CRC-16 (kBadCrc),
// version (kBadVersion), length field (kBadLength). `raw` (kMaxFrameRaw bytes) receives the
// decoded frame; on success *frame points into it. Returns true on success, else false with
// *err set and *seq the frame's seq if it could be trusted (CRC verified), else kUnknownSeq.
bool decode_frame(const uint8_t* encoded, size_t n, uint8_t* raw, Frame* frame, ErrorCode* err,
                  uint16_t* seq);

// Builds the wire bytes of one frame (COBS + 0x00 delimiter) into out (>= kMaxFrameWire bytes
// is always enough). Returns the wire length, or 0 if payload_len > kMaxPayload or the frame
// does not fit cap.
size_t encode_frame(uint8_t type, uint16_t seq, const uint8_t* payload, size_t payload_len,
                    uint8_t* out, size_t cap);

// A short, human-readable name of an error code (the text of ERROR frames starts with it).
const char* error_name(ErrorCode code);

// Incremental frame extraction from a byte stream, resynchronising at the next 0x00 after
// anything invalid, like tinyfed.link.frame.FrameParser. Feed one byte at a time.
class FrameParser {
 public:
  enum class Event : uint8_t { kNone, kFrame, kError };

  // Consumes one byte. kFrame: a valid frame is available in frame() (valid until the next
  // push). kError: a bad frame was dropped; error() and error_seq() say why and which.
  Event push(uint8_t byte);
  const Frame& frame() const { return frame_; }
  ErrorCode error() const { return error_; }
  uint16_t error_seq() const { return error_seq_; }
  void reset() {
    len_ = 0;
    discarding_ = false;
  }

 private:
  // Encoded bytes of the frame being received; a frame of kMaxFrameWire bytes (delimiter
  // included) is the largest accepted, so kMaxFrameWire - 1 bytes before the delimiter.
  uint8_t buf_[kMaxFrameWire - 1];
  uint8_t raw_[kMaxFrameRaw];  // the decoded frame frame_ points into
  size_t len_ = 0;
  bool discarding_ = false;  // dropping an over-long frame up to its delimiter
  Frame frame_{};
  ErrorCode error_ = ErrorCode::kBadEncoding;
  uint16_t error_seq_ = kUnknownSeq;
};

}  // namespace link
}  // namespace tinyfed
