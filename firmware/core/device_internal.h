// What the parts of the Device (device.cpp, device_commands.cpp, device_ui.cpp) share: the
// link names they use, names for log lines and the colours of the buttons. Private to the
// core's device files (its using-declarations are meant for them only).
#pragma once

#include <stdint.h>

#include "device.h"

namespace tinyfed {

using link::ErrorCode;
using link::MsgType;
using link::Source;
using link::State;
using link::XferTarget;
namespace msg = link::msg;

namespace device_detail {

// Names as spec.py spells them (link_spec.h), for log lines and ERROR texts.
inline const char* or_unknown(const char* name) { return name != nullptr ? name : "?"; }
inline const char* state_name(link::State s) { return or_unknown(link::name_of(s)); }
inline const char* target_name(link::XferTarget t) { return or_unknown(link::name_of(t)); }

// The colour a button (and the class it trains) shows: red, green, blue, and white for infer.
inline uint8_t colour_of(int button) {
  static constexpr uint8_t kColours[kButtons] = {kLedRed, kLedGreen, kLedBlue,
                                                 kLedRed | kLedGreen | kLedBlue};
  return kColours[button];
}

}  // namespace device_detail
}  // namespace tinyfed
