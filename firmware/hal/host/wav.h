// A tiny RIFF/WAVE reader for the virtual board's microphone: 16 kHz mono PCM16 only (what
// the board's PDM microphone delivers); anything else is an error naming what the file is.
#pragma once

#include <stdint.h>

#include <string>
#include <vector>

namespace tinyfed {
namespace host {

// Reads `path` into `samples`. Returns an empty string on success, else a one-line error.
std::string read_wav(const std::string& path, std::vector<int16_t>* samples);

}  // namespace host
}  // namespace tinyfed
