// Status codes returned by every fallible function of the portable core.
// The numeric values travel in the link protocol's ERROR frames, so never renumber them:
// add new codes at the end (the link definition in tinyfed/link/spec.py lists them too).
#pragma once

#include <stdint.h>

namespace tinyfed {

enum class Status : uint8_t {
  kOk = 0,
  kBadArgument = 1,     // an argument is out of range (label, length, pointer)
  kBadState = 2,        // the call is not allowed in the current state
  kNonFinite = 3,       // a NaN or infinity where a finite number is required
  kChecksum = 4,        // an end-to-end or frame checksum does not match
  kOverflow = 5,        // data does not fit the buffer it is meant for
};

inline bool ok(Status s) { return s == Status::kOk; }

}  // namespace tinyfed
