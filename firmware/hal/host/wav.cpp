// See wav.h.
#include "wav.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

namespace tinyfed {
namespace host {

namespace {

constexpr uint16_t kFormatPcm = 0x0001;        // WAVE_FORMAT_PCM
constexpr uint16_t kFormatExtensible = 0xFFFE;  // WAVE_FORMAT_EXTENSIBLE (sub-format follows)
constexpr uint32_t kRate = 16000;              // the board's PDM rate (hal/arduino: kPdmRate)

uint16_t le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t le32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

}  // namespace

std::string read_wav(const std::string& path, std::vector<int16_t>* samples) {
  FILE* f = fopen(path.c_str(), "rb");
  if (f == nullptr) return path + ": cannot open: " + strerror(errno);
  std::vector<uint8_t> data;
  uint8_t buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) data.insert(data.end(), buf, buf + n);
  fclose(f);
  if (data.size() < 12 || memcmp(data.data(), "RIFF", 4) != 0 ||
      memcmp(data.data() + 8, "WAVE", 4) != 0) {
    return path + ": not a RIFF/WAVE file";
  }
  bool have_fmt = false;
  uint16_t tag = 0, channels = 0, bits = 0;
  uint32_t rate = 0;
  size_t pos = 12;
  while (pos + 8 <= data.size()) {
    const uint8_t* id = data.data() + pos;
    size_t size = le32(data.data() + pos + 4);
    const size_t body = pos + 8;
    if (memcmp(id, "fmt ", 4) == 0) {
      if (size < 16 || body + size > data.size()) return path + ": truncated fmt chunk";
      const uint8_t* p = data.data() + body;
      tag = le16(p);
      channels = le16(p + 2);
      rate = le32(p + 4);
      bits = le16(p + 14);
      if (tag == kFormatExtensible && size >= 26) tag = le16(p + 24);  // sub-format GUID
      have_fmt = true;
    } else if (memcmp(id, "data", 4) == 0) {
      if (!have_fmt) return path + ": data chunk before fmt chunk";
      if (tag != kFormatPcm || bits != 16 || channels != 1 || rate != kRate) {
        char what[160];
        snprintf(what, sizeof what,
                 ": format tag %u, %u channel(s), %u Hz, %u bits; the virtual microphone "
                 "needs 16 kHz mono 16-bit PCM",
                 tag, channels, rate, bits);
        return path + what;
      }
      if (size > data.size() - body) size = data.size() - body;  // streamed: size unknown
      samples->resize(size / 2);
      for (size_t i = 0; i < samples->size(); ++i) {
        (*samples)[i] = static_cast<int16_t>(le16(data.data() + body + 2 * i));
      }
      return "";
    }
    pos = body + size + (size & 1);  // chunks are padded to even sizes
  }
  return path + (have_fmt ? ": no data chunk" : ": no fmt chunk");
}

}  // namespace host
}  // namespace tinyfed
