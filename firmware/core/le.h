// Little-endian field access (never native byte order): the helpers of the link protocol's
// generated encoders and decoders (link_spec.h) and of the frame codec (link.h). No heap, no
// STL; memcpy is how a float's bits are read without undefined behaviour.
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <string.h>

namespace tinyfed {
namespace link {

inline void put_u8(uint8_t* p, size_t off, uint8_t v) { p[off] = v; }
inline void put_u16(uint8_t* p, size_t off, uint16_t v) {
  p[off] = static_cast<uint8_t>(v);
  p[off + 1] = static_cast<uint8_t>(v >> 8);
}
inline void put_u32(uint8_t* p, size_t off, uint32_t v) {
  for (size_t i = 0; i < 4; ++i) p[off + i] = static_cast<uint8_t>(v >> (8 * i));
}
inline void put_f32(uint8_t* p, size_t off, float v) {
  uint32_t u;
  memcpy(&u, &v, sizeof u);
  put_u32(p, off, u);
}
inline uint8_t get_u8(const uint8_t* p, size_t off) { return p[off]; }
inline uint16_t get_u16(const uint8_t* p, size_t off) {
  return static_cast<uint16_t>(p[off] | (p[off + 1] << 8));
}
inline uint32_t get_u32(const uint8_t* p, size_t off) {
  uint32_t v = 0;
  for (size_t i = 0; i < 4; ++i) v |= static_cast<uint32_t>(p[off + i]) << (8 * i);
  return v;
}
inline float get_f32(const uint8_t* p, size_t off) {
  const uint32_t u = get_u32(p, off);
  float v;
  memcpy(&v, &u, sizeof v);
  return v;
}

}  // namespace link
}  // namespace tinyfed
