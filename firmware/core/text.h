// A fixed-size text builder for log lines and ERROR texts: no heap, no printf (newlib's
// printf with float support costs ~20 KB of flash on the Cortex-M4), truncates silently.
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace tinyfed {

class Text {
 public:
  // kCap: one LOG/ERROR text (spec.py MAX_TEXT = 200) plus its NUL.
  static constexpr size_t kCap = 201;

  Text& str(const char* s) {
    while (s && *s) put(*s++);
    return *this;
  }
  Text& u32(uint32_t v) {
    char digits[10];
    int n = 0;
    do {
      digits[n++] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v != 0);
    while (n > 0) put(digits[--n]);
    return *this;
  }
  Text& i32(int32_t v) {
    if (v < 0) {
      put('-');
      return u32(static_cast<uint32_t>(-(v + 1)) + 1u);
    }
    return u32(static_cast<uint32_t>(v));
  }
  Text& hex(uint32_t v, int digits) {
    for (int i = digits - 1; i >= 0; --i) put("0123456789abcdef"[(v >> (4 * i)) & 0xF]);
    return *this;
  }
  // A float with 6 decimals ("nan"/"inf" spelled out); enough for losses and outputs.
  Text& f32(float v) {
    if (v != v) return str("nan");
    if (v < 0.0f) {
      put('-');
      v = -v;
    }
    if (v > 4.0e9f) return str("inf");
    const uint32_t whole = static_cast<uint32_t>(v);
    uint32_t frac = static_cast<uint32_t>((v - static_cast<float>(whole)) * 1e6f + 0.5f);
    uint32_t w = whole;
    if (frac >= 1000000u) {
      frac -= 1000000u;
      ++w;
    }
    u32(w).put('.');
    for (uint32_t div = 100000u; div > 0; div /= 10) put(static_cast<char>('0' + frac / div % 10));
    return *this;
  }
  const char* c_str() const { return buf_; }
  size_t size() const { return len_; }

 private:
  Text& put(char c) {
    if (len_ + 1 < kCap) {
      buf_[len_++] = c;
      buf_[len_] = '\0';
    }
    return *this;
  }
  char buf_[kCap] = {0};
  size_t len_ = 0;
};

}  // namespace tinyfed
