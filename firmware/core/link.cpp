// The link protocol's frame codec; see link.h. Mirrors tinyfed/link/frame.py line by line.
#include "link.h"

namespace tinyfed {
namespace link {

uint16_t crc16(const uint8_t* data, size_t n, uint16_t crc) {
  for (size_t i = 0; i < n; ++i) {
    crc = static_cast<uint16_t>(crc ^ (static_cast<uint16_t>(data[i]) << 8));
    for (int b = 0; b < 8; ++b) {
      // 0x1021: the CCITT polynomial x^16 + x^12 + x^5 + 1 (spec.py)
      crc = (crc & 0x8000u) ? static_cast<uint16_t>((crc << 1) ^ 0x1021u)
                            : static_cast<uint16_t>(crc << 1);
    }
  }
  return crc;
}

uint32_t crc32(const uint8_t* data, size_t n, uint32_t crc) {
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) {
    crc ^= data[i];
    for (int b = 0; b < 8; ++b) {
      // 0xEDB88320: the IEEE 802.3 polynomial 0x04C11DB7 bit-reversed (zlib's crc32)
      crc = (crc & 1u) ? (crc >> 1) ^ 0xEDB88320u : crc >> 1;
    }
  }
  return ~crc;
}

size_t cobs_encode(const uint8_t* in, size_t n, uint8_t* out, size_t cap) {
  if (cap < 1) return 0;
  size_t len = 1;  // out[0] is the first code byte, filled in when its block ends
  size_t code_pos = 0;
  uint8_t code = 1;
  for (size_t i = 0; i < n; ++i) {
    if (in[i] == 0) {
      out[code_pos] = code;
      if (len >= cap) return 0;
      code_pos = len++;
      code = 1;
      continue;
    }
    if (len >= cap) return 0;
    out[len++] = in[i];
    ++code;
    if (code == 0xFF) {  // a full block of 254 non-zero bytes
      out[code_pos] = code;
      if (len >= cap) return 0;
      code_pos = len++;
      code = 1;
    }
  }
  out[code_pos] = code;
  return len;
}

Status cobs_decode(const uint8_t* in, size_t n, uint8_t* out, size_t cap, size_t* out_len) {
  size_t len = 0;
  size_t i = 0;
  while (i < n) {
    const uint8_t code = in[i];
    if (code == 0) return Status::kBadArgument;
    const size_t end = i + code;
    if (end > n) return Status::kBadArgument;
    for (size_t j = i + 1; j < end; ++j) {
      if (in[j] == 0) return Status::kBadArgument;
      if (len >= cap) return Status::kOverflow;
      out[len++] = in[j];
    }
    i = end;
    if (code != 0xFF && i < n) {
      if (len >= cap) return Status::kOverflow;
      out[len++] = 0;
    }
  }
  *out_len = len;
  return Status::kOk;
}

bool decode_frame(const uint8_t* encoded, size_t n, uint8_t* raw, Frame* frame, ErrorCode* err,
                  uint16_t* seq) {
  *seq = kUnknownSeq;
  if (n + 1 > kMaxFrameWire) {
    *err = ErrorCode::kOverflow;
    return false;
  }
  size_t len = 0;
  const Status s = cobs_decode(encoded, n, raw, kMaxFrameRaw, &len);
  if (!ok(s)) {
    // A valid encoding of at most kMaxFrameWire - 1 bytes always fits kMaxFrameRaw.
    *err = ErrorCode::kBadEncoding;
    return false;
  }
  if (len < kHeaderBytes + kCrcBytes) {
    *err = ErrorCode::kBadLength;
    return false;
  }
  if (crc16(raw, len - kCrcBytes) != get_u16(raw, len - kCrcBytes)) {
    *err = ErrorCode::kBadCrc;
    return false;
  }
  *seq = get_u16(raw, 2);
  if (raw[0] != kProtocolVersion) {
    *err = ErrorCode::kBadVersion;
    return false;
  }
  const size_t payload_len = len - kHeaderBytes - kCrcBytes;
  if (get_u16(raw, 4) != payload_len) {
    *err = ErrorCode::kBadLength;
    return false;
  }
  frame->type = raw[1];
  frame->seq = *seq;
  frame->payload = raw + kHeaderBytes;
  frame->length = static_cast<uint16_t>(payload_len);
  return true;
}

size_t encode_frame(uint8_t type, uint16_t seq, const uint8_t* payload, size_t payload_len,
                    uint8_t* out, size_t cap) {
  if (payload_len > kMaxPayload) return 0;
  uint8_t raw[kMaxFrameRaw];
  raw[0] = kProtocolVersion;
  raw[1] = type;
  put_u16(raw, 2, seq);
  put_u16(raw, 4, static_cast<uint16_t>(payload_len));
  if (payload_len > 0) memcpy(raw + kHeaderBytes, payload, payload_len);
  const size_t body = kHeaderBytes + payload_len;
  put_u16(raw, body, crc16(raw, body));
  if (cap < 1) return 0;
  const size_t n = cobs_encode(raw, body + kCrcBytes, out, cap - 1);
  if (n == 0) return 0;
  out[n] = 0;  // the delimiter
  return n + 1;
}

const char* error_name(ErrorCode code) {
  const char* name = name_of(code);  // spec.py's name (link_spec.h)
  return name != nullptr ? name : "UNKNOWN_ERROR";
}

FrameParser::Event FrameParser::push(uint8_t byte) {
  if (byte != 0) {
    if (discarding_) return Event::kNone;
    if (len_ + 1 + 1 > kMaxFrameWire) {  // this byte plus the delimiter would not fit
      len_ = 0;
      discarding_ = true;
      error_ = ErrorCode::kOverflow;
      error_seq_ = kUnknownSeq;
      return Event::kError;
    }
    buf_[len_++] = byte;
    return Event::kNone;
  }
  // The delimiter: end of a frame (or of garbage being discarded).
  if (discarding_) {
    discarding_ = false;
    return Event::kNone;
  }
  if (len_ == 0) return Event::kNone;  // back-to-back delimiters carry nothing
  const size_t n = len_;
  len_ = 0;
  if (decode_frame(buf_, n, raw_, &frame_, &error_, &error_seq_)) return Event::kFrame;
  return Event::kError;
}

}  // namespace link
}  // namespace tinyfed
