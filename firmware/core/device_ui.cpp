// The device's user interface: debounced buttons (arm, record, the long press that asks for a
// round) and the LEDs (result blinks, the upload light); see device.h.
#include "device.h"

#include <string.h>

#include "device_internal.h"
#include "text.h"

namespace tinyfed {

using device_detail::colour_of;
using device_detail::state_name;

namespace {

// What each button does, for log lines (README "Wiring").
const char* button_role(int button) {
  static const char* const kRoles[kButtons] = {"train keyword 1", "train keyword 2",
                                               "train keyword 3", "infer"};
  return kRoles[button];
}
}  // namespace

void Device::poll_buttons(uint32_t now) {
  const uint8_t raw = static_cast<uint8_t>(hal_->buttons() & 0x0F);
  if (raw != btn_raw_) {
    btn_raw_ = raw;
    btn_changed_ms_ = now;
  }
  if (armed_ == 3 && !round_request_ && now - armed_ms_ >= kRoundRequestHoldMs) {
    // The infer button held long: releasing it now asks for a round instead of recording.
    round_request_ = true;
    set_leds(kLedRed | kLedGreen | kLedBlue | kLedBusy);
    log_line(LogLevel::kInfo, "button D5 held: release to ask the gateway for a round", true);
  }
  if (raw == btn_stable_ || now - btn_changed_ms_ < kDebounceMs) return;
  const uint8_t changed = static_cast<uint8_t>(raw ^ btn_stable_);
  btn_stable_ = raw;
  for (int b = 0; b < kButtons; ++b) {
    if (!(changed & (1u << b))) continue;
    if (raw & (1u << b)) {
      on_press(b);
    } else {
      on_release(b);
    }
  }
}

void Device::on_press(int button) {
  Text t;
  t.str("button D").u32(static_cast<uint32_t>(button + 2)).str(" (").str(button_role(button))
      .str(") pressed");
  if (armed_ >= 0 || state_ != State::kIdle) {
    t.str("; ignored, board is ").str(state_name(state_));
    log_line(LogLevel::kInfo, t.c_str(), true);
    return;
  }
  t.str(": release to record one second");
  log_line(LogLevel::kInfo, t.c_str(), true);
  armed_ = button;
  armed_ms_ = now_;
  round_request_ = false;
  blink_left_ = 0;
  set_state(State::kArmed);
  set_leds(colour_of(button));
}

void Device::on_release(int button) {
  if (button != armed_) return;
  armed_ = -1;
  if (round_request_) {
    round_request_ = false;
    set_leds(0);
    set_state(State::kIdle);
    request_round(now_ - armed_ms_);
    return;
  }
  Text t;
  t.str("button D").u32(static_cast<uint32_t>(button + 2)).str(" released: recording one second");
  log_line(LogLevel::kInfo, t.c_str(), true);
  if (!hal_->mic_start(audio_, kRecordSamples)) {
    log_line(LogLevel::kError, "microphone failed to start: no recording (check the board's "
             "boot log)", true);
    set_leds(0);
    set_state(State::kIdle);
    return;
  }
  pending_ = Pending::kButton;
  pending_label_ = button < kOutputs ? static_cast<uint8_t>(button) : link::kNoClass;
  pending_ref_seq_ = 0;
  record_ms_ = now_;
  set_state(State::kRecording);
  set_leds(kLedBusy);
}

void Device::request_round(uint32_t held_ms) {
  // LOG, level info, text "event round_request button=D5 held_ms=N round=R steps=S": the
  // gateway matches the prefix kRoundRequestEvent and may start a federated round for all
  // boards (README "Ask for a round now"). Acknowledged on the board by two white blinks.
  Text t;
  t.str(kRoundRequestEvent).str(" button=D5 held_ms=").u32(held_ms).str(" round=")
      .u32(model_round_).str(" steps=").u32(steps_since_global_);
  log_line(LogLevel::kInfo, t.c_str(), true);
  start_blink(kLedRed | kLedGreen | kLedBlue, 2);
}

void Device::start_blink(uint8_t leds, uint8_t count) {
  blink_leds_ = leds;
  blink_left_ = static_cast<uint8_t>(2 * count);  // half-periods: on, off, on, off, ...
  blink_ms_ = now_;
  set_leds(leds);
}

void Device::poll_blink(uint32_t now) {
  if (blink_left_ == 0 || now - blink_ms_ < kBlinkMs) return;
  blink_ms_ = now;
  --blink_left_;
  const bool on = blink_left_ > 0 && (blink_left_ % 2) == 0;
  set_leds(on ? blink_leds_ : 0);
}

void Device::poll_idle_leds() {
  // In IDLE with no result blinking, the built-in LED shows an upload in progress.
  if (state_ != State::kIdle || armed_ >= 0 || blink_left_ != 0) return;
  const bool uploading = read_left_ > 0 || (upload_seen_ && now_ - upload_ms_ < kUploadLedHoldMs);
  if (!uploading) upload_seen_ = false;
  set_leds(uploading ? kLedBusy : 0);
}

void Device::set_leds(uint8_t leds) {
  if (leds == leds_) return;
  leds_ = leds;
  hal_->set_leds(leds);
}

}  // namespace tinyfed
