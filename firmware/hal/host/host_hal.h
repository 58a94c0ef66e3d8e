// The host HAL of the virtual board: the link on a pseudo-terminal or stdin/stdout, a
// microphone fed from a queue of WAV clips, buttons pressed by a scripted user, LEDs and
// events written to a log. Host code: the STL and the OS are fine here (never in core/).
#pragma once

#include <stdint.h>
#include <stdio.h>

#include <deque>
#include <string>
#include <vector>

#include "hal.h"

namespace tinyfed {
namespace host {

class HostHal final : public Hal {
 public:
  HostHal();
  ~HostHal();

  // Link endpoints: read from in_fd, write to out_fd (the same fd for a pty master).
  void set_link(int in_fd, int out_fd, bool nonblocking_out);
  // The virtual board's identity.
  void set_board_id(const uint8_t id[8]) {
    for (int i = 0; i < 8; ++i) board_id_[i] = id[i];
  }
  // Where log lines go: a file (may be null) and stderr from `stderr_level` up.
  void set_log(FILE* file, LogLevel stderr_level) {
    log_file_ = file;
    stderr_level_ = stderr_level;
  }
  void set_record_ms(uint32_t ms) { record_ms_ = ms; }

  // Used by the main loop and the scripted user.
  void queue_clip(const std::vector<int16_t>& clip) { clips_.push_back(clip); }
  void drop_last_clip() {
    if (!clips_.empty()) clips_.pop_back();
  }
  void set_button(int index, bool pressed);
  uint32_t mic_starts() const { return mic_starts_; }
  bool link_eof() const { return link_eof_; }
  bool tx_pending() const { return !tx_backlog_.empty(); }
  bool reboot_requested() const { return reboots_ != 0; }
  int in_fd() const { return in_fd_; }
  int out_fd() const { return out_fd_; }
  // Writes as much of the TX backlog as the link takes now.
  void flush_tx();

  // Hal
  uint32_t millis() override;
  size_t link_read(uint8_t* buf, size_t cap) override;
  void link_write(const uint8_t* data, size_t n) override;
  // Free room in the TX backlog: READ waits for it instead of losing chunks.
  size_t link_room() override { return kTxBacklogMax - tx_backlog_.size(); }
  uint8_t buttons() override { return buttons_; }
  void set_leds(uint8_t leds) override;
  bool mic_start(int16_t* buf, size_t n) override;
  bool mic_done() override;
  uint32_t random32() override;
  void board_id(uint8_t out[8]) override {
    for (int i = 0; i < 8; ++i) out[i] = board_id_[i];
  }
  uint8_t hello_flags() override { return 0x01; }  // bit 0: virtual board (spec.py HELLO)
  void log(LogLevel level, const char* text) override;
  void reboot() override;

 private:
  // Bytes the link could not take yet (a pty nobody reads); whole frames are dropped when it
  // is full, never parts of them. 64 KiB holds ~270 full frames: a whole model upload.
  static constexpr size_t kTxBacklogMax = 64 * 1024;

  int in_fd_ = -1;
  int out_fd_ = -1;
  bool nonblocking_out_ = true;
  bool link_eof_ = false;
  std::deque<uint8_t> tx_backlog_;
  uint32_t dropped_frames_ = 0;
  uint8_t board_id_[8] = {0};
  FILE* log_file_ = nullptr;
  LogLevel stderr_level_ = LogLevel::kWarn;
  uint8_t buttons_ = 0;
  uint8_t leds_ = 0xFF;
  std::deque<std::vector<int16_t>> clips_;
  uint32_t record_ms_ = 1000;  // one second, like the board
  bool recording_ = false;
  uint32_t record_start_ = 0;
  uint32_t mic_starts_ = 0;
  uint32_t reboots_ = 0;
  uint64_t start_ns_ = 0;
  uint64_t rng_state_ = 0;
};

}  // namespace host
}  // namespace tinyfed
