// See host_hal.h.
#include "host_hal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <random>

namespace tinyfed {
namespace host {

namespace {

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

const char* level_name(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kError: return "error";
  }
  return "?";
}

}  // namespace

HostHal::HostHal() : start_ns_(now_ns()) {
  std::random_device rd;
  rng_state_ = (static_cast<uint64_t>(rd()) << 32) ^ rd() ^ start_ns_ ^
               (static_cast<uint64_t>(getpid()) << 16);
}

HostHal::~HostHal() = default;

void HostHal::set_link(int in_fd, int out_fd, bool nonblocking_out) {
  in_fd_ = in_fd;
  out_fd_ = out_fd;
  nonblocking_out_ = nonblocking_out;
}

void HostHal::set_button(int index, bool pressed) {
  const uint8_t bit = static_cast<uint8_t>(1u << index);
  buttons_ = static_cast<uint8_t>(pressed ? (buttons_ | bit) : (buttons_ & ~bit));
}

uint32_t HostHal::millis() { return static_cast<uint32_t>((now_ns() - start_ns_) / 1000000ull); }

size_t HostHal::link_read(uint8_t* buf, size_t cap) {
  if (in_fd_ < 0 || link_eof_) return 0;
  // stdin may be a blocking descriptor (--stdio): read only what is there, never wait, or the
  // main loop would stall (e.g. a READ of many chunks would stop after the first poll's share).
  pollfd pfd;
  pfd.fd = in_fd_;
  pfd.events = POLLIN;
  pfd.revents = 0;
  if (poll(&pfd, 1, 0) <= 0) return 0;
  const ssize_t n = read(in_fd_, buf, cap);
  if (n > 0) return static_cast<size_t>(n);
  if (n == 0) {
    // stdin closed (a pty master never reads 0 while we hold the slave open).
    link_eof_ = true;
    log(LogLevel::kInfo, "link input closed");
  } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != EIO) {
    link_eof_ = true;
    char text[128];
    snprintf(text, sizeof text, "link read failed: %s", strerror(errno));
    log(LogLevel::kError, text);
  }
  return 0;
}

void HostHal::link_write(const uint8_t* data, size_t n) {
  if (out_fd_ < 0) return;
  if (tx_backlog_.size() + n > kTxBacklogMax) {
    // Nobody reads the link (a serial port with no host attached): drop the whole frame.
    if (dropped_frames_++ % 100 == 0) {
      char text[128];
      snprintf(text, sizeof text, "link output full: frame dropped (%u so far)",
               dropped_frames_);
      log(LogLevel::kWarn, text);
    }
    return;
  }
  tx_backlog_.insert(tx_backlog_.end(), data, data + n);
  flush_tx();
}

void HostHal::flush_tx() {
  uint8_t buf[4096];
  while (!tx_backlog_.empty()) {
    const size_t n = tx_backlog_.size() < sizeof buf ? tx_backlog_.size() : sizeof buf;
    for (size_t i = 0; i < n; ++i) buf[i] = tx_backlog_[i];
    const ssize_t w = write(out_fd_, buf, n);
    if (w <= 0) {
      if (w < 0 && errno == EINTR) continue;
      return;  // EAGAIN: the reader is slow or absent; retried at the next loop
    }
    tx_backlog_.erase(tx_backlog_.begin(), tx_backlog_.begin() + w);
  }
}

void HostHal::set_leds(uint8_t leds) {
  if (leds == leds_) return;
  leds_ = leds;
  char text[96];
  snprintf(text, sizeof text, "led red=%d green=%d blue=%d busy=%d", (leds & kLedRed) ? 1 : 0,
           (leds & kLedGreen) ? 1 : 0, (leds & kLedBlue) ? 1 : 0, (leds & kLedBusy) ? 1 : 0);
  log(LogLevel::kInfo, text);
}

bool HostHal::mic_start(int16_t* buf, size_t n) {
  ++mic_starts_;
  memset(buf, 0, n * sizeof *buf);
  if (clips_.empty()) {
    log(LogLevel::kWarn, "microphone: no clip queued, recording silence");
  } else {
    const std::vector<int16_t>& clip = clips_.front();
    // Pad with zeros at the end or cut to the first second (tinyfed.features.fit_length).
    const size_t m = clip.size() < n ? clip.size() : n;
    memcpy(buf, clip.data(), m * sizeof *buf);
    clips_.pop_front();
  }
  recording_ = true;
  record_start_ = millis();
  return true;
}

bool HostHal::mic_done() {
  if (!recording_) return true;
  if (millis() - record_start_ < record_ms_) return false;
  recording_ = false;
  return true;
}

uint32_t HostHal::random32() {
  // splitmix64 over a seed from std::random_device, the clock and the pid.
  uint64_t z = (rng_state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return static_cast<uint32_t>((z ^ (z >> 31)) >> 16);
}

void HostHal::log(LogLevel level, const char* text) {
  const double t = static_cast<double>(now_ns() - start_ns_) / 1e9;
  if (log_file_ != nullptr) {
    fprintf(log_file_, "%.3f %s %s\n", t, level_name(level), text);
    fflush(log_file_);
  }
  if (static_cast<uint8_t>(level) >= static_cast<uint8_t>(stderr_level_)) {
    fprintf(stderr, "tinyfed-virtual-board: %.3f %s %s\n", t, level_name(level), text);
  }
}

void HostHal::reboot() {
  ++reboots_;
  recording_ = false;  // a recording in progress dies with the power
  log(LogLevel::kInfo, "reboot (power cycle): RAM cleared, new boot id");
}

}  // namespace host
}  // namespace tinyfed
