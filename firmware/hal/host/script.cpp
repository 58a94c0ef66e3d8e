// See script.h.
#include "script.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wav.h"

namespace tinyfed {
namespace host {

namespace {

std::string dir_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
}

bool parse_ms(const std::string& word, uint32_t* ms) {
  if (word.empty()) return false;
  char* end = nullptr;
  const unsigned long v = strtoul(word.c_str(), &end, 10);
  if (*end != '\0' || v > 3600000ul) return false;  // at most an hour
  *ms = static_cast<uint32_t>(v);
  return true;
}

}  // namespace

std::string load_script(const std::string& path, Script* script) {
  FILE* f = fopen(path.c_str(), "r");
  if (f == nullptr) return path + ": cannot open the script: " + strerror(errno);
  const std::string base = dir_of(path);
  char line[4096];
  int lineno = 0;
  std::string err;
  while (err.empty() && fgets(line, sizeof line, f) != nullptr) {
    ++lineno;
    std::string text(line);
    const size_t hash = text.find('#');
    if (hash != std::string::npos) text.resize(hash);
    std::vector<std::string> words;
    size_t i = 0;
    while (i < text.size()) {
      while (i < text.size() && isspace(static_cast<unsigned char>(text[i]))) ++i;
      size_t j = i;
      while (j < text.size() && !isspace(static_cast<unsigned char>(text[j]))) ++j;
      if (j > i) words.push_back(text.substr(i, j - i));
      i = j;
    }
    if (words.empty()) continue;
    const std::string where = path + ":" + std::to_string(lineno) + ": ";
    Action a{Action::Kind::kWait, -1, 0, 0, ""};
    for (const std::string& w : words) a.text += (a.text.empty() ? "" : " ") + w;
    if (words[0] == "press") {
      if (words.size() != 3) {
        err = where + "expected `press D2|D3|D4|D5 CLIP.wav`";
        break;
      }
      const std::string& b = words[1];
      if (b.size() != 2 || (b[0] != 'D' && b[0] != 'd') || b[1] < '2' || b[1] > '5') {
        err = where + "unknown button '" + b + "' (D2, D3, D4 train keyword 1-3; D5 infers)";
        break;
      }
      a.kind = Action::Kind::kPress;
      a.button = b[1] - '2';
      const std::string clip_path = words[2][0] == '/' ? words[2] : base + "/" + words[2];
      std::vector<int16_t> samples;
      const std::string wav_err = read_wav(clip_path, &samples);
      if (!wav_err.empty()) {
        err = where + wav_err;
        break;
      }
      a.clip = script->clips.size();
      script->clips.push_back(samples);
    } else if (words[0] == "request" && words.size() == 2 && words[1] == "round") {
      a.kind = Action::Kind::kRequestRound;
      a.button = 3;  // D5, held past kRoundRequestHoldMs
    } else if (words[0] == "wait" && words.size() == 2 && words[1] == "model") {
      a.kind = Action::Kind::kWaitModel;
    } else if (words[0] == "wait" || words[0] == "pace" || words[0] == "hold") {
      if (words.size() != 2 || !parse_ms(words[1], &a.ms)) {
        err = where + "expected `" + words[0] + " MILLISECONDS`" +
              (words[0] == "wait" ? " or `wait model`" : "");
        break;
      }
      a.kind = words[0] == "wait"   ? Action::Kind::kWait
               : words[0] == "pace" ? Action::Kind::kPace
                                    : Action::Kind::kHold;
      if (a.kind == Action::Kind::kHold && a.ms <= kDebounceMs) {
        err = where + "hold must be longer than the " + std::to_string(kDebounceMs) +
              " ms debounce";
        break;
      }
      if (a.kind == Action::Kind::kHold && a.ms >= kRoundRequestHoldMs) {
        err = where + "hold must be shorter than " + std::to_string(kRoundRequestHoldMs) +
              " ms (holding D5 that long asks for a round: use `request round`)";
        break;
      }
    } else {
      err = where + "unknown command '" + words[0] + "' (press, wait, pace, hold, request round)";
      break;
    }
    script->actions.push_back(a);
  }
  fclose(f);
  return err;
}

void ScriptedUser::poll(HostHal& hal, const Device& device) {
  if (script_ == nullptr) return;
  const uint32_t now = hal.millis();
  const link::State state = device.state();
  switch (phase_) {
    case Phase::kReady: {
      if (next_ >= script_->actions.size() || now - not_before_ > 0x80000000u) return;
      const Action& a = script_->actions[next_];
      if (a.kind == Action::Kind::kPress || a.kind == Action::Kind::kRequestRound) {
        // A person waits until the board is idle (not recording, computing or receiving).
        if (state != link::State::kIdle || hal.buttons() != 0) return;
        hal.log(LogLevel::kInfo, ("script: " + a.text).c_str());
        if (a.kind == Action::Kind::kPress) hal.queue_clip(script_->clips[a.clip]);
        hal.set_button(a.button, true);
        mic_starts_before_ = hal.mic_starts();
        current_ = &a;
        phase_ = Phase::kHolding;
        phase_ms_ = now;
        ++next_;
        return;
      }
      if (a.kind == Action::Kind::kWaitModel) {
        if (device.boot_id() != boot_seen_) {  // the board rebooted: its count restarted
          boot_seen_ = device.boot_id();
          models_seen_ = 0;
        }
        if (device.models_applied() == models_seen_) return;  // not yet
        models_seen_ = device.models_applied();
      }
      hal.log(LogLevel::kInfo, ("script: " + a.text).c_str());
      if (a.kind == Action::Kind::kWait) not_before_ = now + a.ms;
      if (a.kind == Action::Kind::kPace) pace_ms_ = a.ms;
      if (a.kind == Action::Kind::kHold) hold_ms_ = a.ms;
      ++next_;
      return;
    }
    case Phase::kHolding: {
      const bool round = current_->kind == Action::Kind::kRequestRound;
      // A round request holds past the board's threshold (200 ms margin for the poll loop).
      const uint32_t hold = round ? kRoundRequestHoldMs + 200 : hold_ms_;
      if (now - phase_ms_ < hold) return;
      hal.set_button(current_->button, false);
      if (round) {  // nothing is recorded: the LOG frame is the result
        phase_ = Phase::kReady;
        not_before_ = now + pace_ms_;
        return;
      }
      phase_ = Phase::kWaitingResult;
      phase_ms_ = now;
      return;
    }
    case Phase::kWaitingResult:
      if (hal.mic_starts() != mic_starts_before_) {
        // The release started a recording (state RECORDING, then COMPUTING, in the same
        // poll): the result is out once the board leaves both.
        if (state != link::State::kRecording && state != link::State::kComputing) {
          phase_ = Phase::kReady;
          not_before_ = now + pace_ms_;
        }
        return;
      }
      if (now - phase_ms_ > 4 * kDebounceMs) {
        // The board ignored the press (busy at that moment): take the clip back from the
        // microphone and press again once the board is idle.
        hal.log(LogLevel::kInfo, "script: the press was ignored; pressing again");
        hal.drop_last_clip();
        --next_;
        phase_ = Phase::kReady;
      }
      return;
  }
}

}  // namespace host
}  // namespace tinyfed
