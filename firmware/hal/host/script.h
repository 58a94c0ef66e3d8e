// The scripted user of the virtual board: a text file of button presses with WAV clips.
//
//   # comment                  blank lines and text after '#' are ignored
//   press D2 clips/red.wav     queue the clip on the microphone, press D2, release: the board
//                              records it and trains keyword 1 (D3: 2, D4: 3; D5: infer only)
//   wait 1500                  do nothing for 1500 ms
//   wait model                 wait until the host has downloaded a model into the board
//                              (one applied since the previous `wait model`, or since boot)
//   pace 500                   from now on, wait 500 ms after each press's result (default 500)
//   hold 200                   from now on, hold each button 200 ms (default 200, > debounce,
//                              < the 3 s round-request hold)
//   request round              hold D5 for 3.2 s and release: the board asks the gateway for a
//                              round (LOG "event round_request ...", README "Ask for a round now")
//
// Clip paths are relative to the script file's folder. Every clip is read and checked when
// the script is loaded, so a bad file fails at startup, not in the middle of a run. The user
// only presses when the board is IDLE (as a person waits for the LEDs), and presses again if
// the board ignored a press (e.g. a host transfer opened at the same moment).
#pragma once

#include <stdint.h>

#include <string>
#include <vector>

#include "device.h"
#include "host_hal.h"

namespace tinyfed {
namespace host {

struct Action {
  enum class Kind { kPress, kWait, kWaitModel, kPace, kHold, kRequestRound };
  Kind kind;
  int button;        // kPress: 0..3 for D2..D5
  uint32_t ms;       // kWait, kPace, kHold
  size_t clip;       // kPress: index into Script::clips
  std::string text;  // the line, for the log
};

struct Script {
  std::vector<Action> actions;
  std::vector<std::vector<int16_t>> clips;
};

// Parses and loads `path`. Returns "" on success, else "FILE:LINE: problem".
std::string load_script(const std::string& path, Script* script);

class ScriptedUser {
 public:
  explicit ScriptedUser(const Script* script) : script_(script) {}
  // One step: may press or release a button through hal. Call once per main-loop iteration.
  void poll(HostHal& hal, const Device& device);
  bool done() const { return script_ == nullptr || (next_ >= script_->actions.size() &&
                                                    phase_ == Phase::kReady); }

 private:
  enum class Phase { kReady, kHolding, kWaitingResult };
  const Script* script_;
  size_t next_ = 0;
  Phase phase_ = Phase::kReady;
  uint32_t not_before_ = 0;  // ms: the next action waits until then
  uint32_t phase_ms_ = 0;
  uint32_t pace_ms_ = 500;
  uint32_t hold_ms_ = 200;
  uint32_t mic_starts_before_ = 0;
  uint32_t models_seen_ = 0;  // device.models_applied() consumed by `wait model`
  uint32_t boot_seen_ = 0;    // device.boot_id() models_seen_ belongs to (RESET zeroes both)
  const Action* current_ = nullptr;
};

}  // namespace host
}  // namespace tinyfed
