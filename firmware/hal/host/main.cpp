// tinyfed-virtual-board: the firmware's portable core on the host, speaking the link protocol
// on a pseudo-terminal (or stdin/stdout) exactly as a board does on USB serial. See
// firmware/README.md ("Virtual board") and `tinyfed-virtual-board --help`.
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <string>

#include "device.h"
#include "dscnn_weights.h"
#include "host_hal.h"
#include "script.h"

namespace {

using tinyfed::LogLevel;

volatile sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

// Main-loop period when nothing arrives: the board's loop() runs far faster, but 2 ms keeps
// debouncing (20 ms) and the 150 ms LED blinks exact while costing no measurable CPU.
constexpr int kLoopMs = 2;

const char kUsage[] =
    "usage: tinyfed-virtual-board [options]\n"
    "\n"
    "The tinyfed firmware core on the host: a virtual Arduino Nano 33 BLE Sense that speaks\n"
    "the link protocol on a pseudo-terminal, hears WAV clips, and is pressed by a script.\n"
    "\n"
    "link:\n"
    "  --pty                  open a pseudo-terminal and print `PTY <path>` first (default)\n"
    "  --stdio                frames on stdin/stdout instead (logs go to stderr)\n"
    "  --symlink PATH         also make PATH a symlink to the pty (a stable port name across\n"
    "                         restarts, like /dev/ttyACM0); removed at exit\n"
    "identity and model:\n"
    "  --board-id HEX16       8-byte board id, 16 hex digits (default: from pid and time)\n"
    "  --seed N               seed of the fresh model at every boot (default 12345)\n"
    "  --family NAME          paper | dscnn: the paper's network, or the frozen extractor in\n"
    "                         flash with a head trained here (docs/learning.md; default paper)\n"
    "  --pipeline NAME        paper | centroid (default centroid) for the paper's family;\n"
    "                         logmel40 (implied) for dscnn\n"
    "  --lr X                 learning rate at boot, (0, 10] (default 0.3)\n"
    "  --momentum X           momentum at boot, [0, 1) (default 0.9)\n"
    "  --local-steps N        local steps per round at boot, >= 1 (default 10)\n"
    "user and microphone:\n"
    "  --script FILE          button presses with WAV clips (firmware/README.md)\n"
    "  --exit-after-script    exit once the script has run (default: keep serving the link)\n"
    "  --record-ms MS         how long a recording takes (default 1000, like the board)\n"
    "logging:\n"
    "  --log FILE             LED, state and event log, one line each\n"
    "  --verbose              all log lines on stderr too (default: warnings and errors)\n"
    "  --help                 this text\n";

// The released extractor, in flash (core/dscnn_weights.*, generated from the pre-trained model).
const tinyfed::DscnnWeights kExtractor = tinyfed::dscnn_weights_from(
    tinyfed::dscnn_weights::kLayer, tinyfed::dscnn_weights::kEmbedA,
    tinyfed::dscnn_weights::kEmbedB);

int usage_error(const std::string& what) {
  fprintf(stderr, "tinyfed-virtual-board: %s\n(see --help)\n", what.c_str());
  return 2;
}

bool parse_float(const char* s, float* out) {
  char* end = nullptr;
  errno = 0;
  const double v = strtod(s, &end);
  if (*s == '\0' || *end != '\0' || errno != 0) return false;
  *out = static_cast<float>(v);
  return true;
}

bool parse_u32(const char* s, uint32_t* out) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = strtoull(s, &end, 10);
  if (*s == '\0' || *s == '-' || *end != '\0' || errno != 0 || v > 0xFFFFFFFFull) return false;
  *out = static_cast<uint32_t>(v);
  return true;
}

bool parse_board_id(const char* s, uint8_t id[8]) {
  if (strlen(s) != 16) return false;
  for (int i = 0; i < 8; ++i) {
    unsigned v = 0;
    for (int j = 0; j < 2; ++j) {
      const char c = s[2 * i + j];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f') v |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= static_cast<unsigned>(c - 'A' + 10);
      else return false;
    }
    id[i] = static_cast<uint8_t>(v);
  }
  return true;
}

void default_board_id(uint8_t id[8]) {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t z = (static_cast<uint64_t>(getpid()) << 32) ^ static_cast<uint64_t>(ts.tv_sec) ^
               (static_cast<uint64_t>(ts.tv_nsec) << 20);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  for (int i = 0; i < 8; ++i) id[i] = static_cast<uint8_t>(z >> (8 * i));
}

}  // namespace

int main(int argc, char** argv) {
  bool use_pty = true;
  bool exit_after_script = false;
  bool verbose = false;
  std::string script_path, log_path, symlink_path;
  uint8_t board_id[8];
  bool have_board_id = false;
  uint32_t record_ms = 1000;  // one second at 16 kHz, like the board (core/device.h kRecordSamples)
  tinyfed::DeviceConfig config;

  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char** out) {
      if (i + 1 >= argc) return false;
      *out = argv[++i];
      return true;
    };
    const char* v = nullptr;
    if (a == "--help" || a == "-h") {
      fputs(kUsage, stdout);
      return 0;
    } else if (a == "--pty") {
      use_pty = true;
    } else if (a == "--stdio") {
      use_pty = false;
    } else if (a == "--exit-after-script") {
      exit_after_script = true;
    } else if (a == "--verbose" || a == "-v") {
      verbose = true;
    } else if (a == "--script") {
      if (!value(&v)) return usage_error("--script needs a FILE");
      script_path = v;
    } else if (a == "--symlink") {
      if (!value(&v)) return usage_error("--symlink needs a PATH");
      symlink_path = v;
    } else if (a == "--log") {
      if (!value(&v)) return usage_error("--log needs a FILE");
      log_path = v;
    } else if (a == "--board-id") {
      if (!value(&v) || !parse_board_id(v, board_id)) {
        return usage_error("--board-id needs 16 hex digits (8 bytes), e.g. 0011223344556677");
      }
      have_board_id = true;
    } else if (a == "--seed") {
      if (!value(&v) || !parse_u32(v, &config.seed)) return usage_error("--seed needs 0..2^32-1");
    } else if (a == "--family") {
      if (!value(&v)) return usage_error("--family needs paper or dscnn");
      if (strcmp(v, "dscnn") == 0) {
        config.arch = tinyfed::link::ArchId::kDscnnHead;
        config.pipeline = tinyfed::link::PipelineId::kLogmel40;
        config.extractor = &kExtractor;
      } else if (strcmp(v, "paper") != 0) {
        return usage_error(std::string("unknown family '") + v + "'; valid: dscnn, paper");
      }
    } else if (a == "--pipeline") {
      if (!value(&v)) return usage_error("--pipeline needs paper, centroid or logmel40");
      if (strcmp(v, "paper") == 0) {
        config.pipeline = tinyfed::link::PipelineId::kPaper;
      } else if (strcmp(v, "centroid") == 0) {
        config.pipeline = tinyfed::link::PipelineId::kCentroid;
      } else {
        if (strcmp(v, "logmel40") != 0) {
          return usage_error(std::string("unknown pipeline '") + v +
                             "'; valid: centroid, logmel40, paper");
        }
        config.pipeline = tinyfed::link::PipelineId::kLogmel40;
      }
    } else if (a == "--lr") {
      if (!value(&v) || !parse_float(v, &config.lr) || !(config.lr > 0.0f) ||
          config.lr > 10.0f) {
        return usage_error("--lr needs a number in (0, 10]");
      }
    } else if (a == "--momentum") {
      if (!value(&v) || !parse_float(v, &config.momentum) || !(config.momentum >= 0.0f) ||
          !(config.momentum < 1.0f)) {
        return usage_error("--momentum needs a number in [0, 1)");
      }
    } else if (a == "--local-steps") {
      uint32_t n = 0;
      if (!value(&v) || !parse_u32(v, &n) || n < 1 || n > 0xFFFF) {
        return usage_error("--local-steps needs 1..65535");
      }
      config.local_steps = static_cast<uint16_t>(n);
    } else if (a == "--record-ms") {
      if (!value(&v) || !parse_u32(v, &record_ms) || record_ms > 60000) {
        return usage_error("--record-ms needs 0..60000");
      }
    } else {
      return usage_error("unknown option '" + a + "'");
    }
  }

  const bool dscnn = config.arch == tinyfed::link::ArchId::kDscnnHead;
  if (dscnn != (config.pipeline == tinyfed::link::PipelineId::kLogmel40)) {
    return usage_error(dscnn ? "--family dscnn computes --pipeline logmel40 only"
                             : "--pipeline logmel40 needs --family dscnn");
  }

  tinyfed::host::Script script;
  if (!script_path.empty()) {
    const std::string err = tinyfed::host::load_script(script_path, &script);
    if (!err.empty()) return usage_error(err);
  }
  FILE* log_file = nullptr;
  if (!log_path.empty()) {
    log_file = fopen(log_path.c_str(), "a");
    if (log_file == nullptr) {
      return usage_error("cannot open the log " + log_path + ": " + strerror(errno));
    }
  }
  if (!have_board_id) default_board_id(board_id);

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);

  static tinyfed::host::HostHal hal;  // static like the board's memory (and off the stack)
  hal.set_log(log_file, verbose ? LogLevel::kDebug : LogLevel::kWarn);
  hal.set_board_id(board_id);
  hal.set_record_ms(record_ms);

  int master = -1, slave = -1;
  if (use_pty) {
    char name[256];
    if (openpty(&master, &slave, name, nullptr, nullptr) != 0) {
      fprintf(stderr, "tinyfed-virtual-board: openpty failed: %s\n", strerror(errno));
      return 1;
    }
    // Raw mode: no echo, no line editing, no CR/LF translation, 8-bit clean. We keep the
    // slave open ourselves so the pty survives a gateway closing and reopening it.
    termios tio;
    tcgetattr(slave, &tio);
    cfmakeraw(&tio);
    tcsetattr(slave, TCSANOW, &tio);
    fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK);
    fcntl(master, F_SETFD, FD_CLOEXEC);
    fcntl(slave, F_SETFD, FD_CLOEXEC);
    hal.set_link(master, master, true);
    if (!symlink_path.empty()) {
      unlink(symlink_path.c_str());  // a stale link from a killed run
      if (symlink(name, symlink_path.c_str()) != 0) {
        return usage_error("cannot create the symlink " + symlink_path + ": " + strerror(errno));
      }
    }
    printf("PTY %s\n", name);
    fflush(stdout);
    std::string text = std::string("link on pseudo-terminal ") + name;
    hal.log(LogLevel::kInfo, text.c_str());
  } else {
    hal.set_link(STDIN_FILENO, STDOUT_FILENO, false);
    hal.log(LogLevel::kInfo, "link on stdin/stdout");
  }
  {
    char text[96];
    snprintf(text, sizeof text, "board id %02x%02x%02x%02x%02x%02x%02x%02x (virtual)",
             board_id[0], board_id[1], board_id[2], board_id[3], board_id[4], board_id[5],
             board_id[6], board_id[7]);
    hal.log(LogLevel::kInfo, text);
  }

  static tinyfed::Device device;  // ~122 KB: static, as on the board
  if (!tinyfed::ok(device.begin(&hal, config))) {
    fprintf(stderr, "tinyfed-virtual-board: the device failed to start\n");
    return 1;
  }
  tinyfed::host::ScriptedUser user(script_path.empty() ? nullptr : &script);
  bool script_reported = false;

  // What the real board reports at boot, for this board: its microphone is the script's WAV
  // clips (or silence without a script), its buttons the script's presses.
  char boot_report[160];
  snprintf(boot_report, sizeof boot_report,
           "board: virtual; microphone ok (%s, %u ms recordings); buttons scripted; family %s",
           script_path.empty() ? "no script: silence" : "the script's WAV clips",
           static_cast<unsigned>(record_ms),
           config.arch == tinyfed::link::ArchId::kDscnnHead ? "dscnn" : "paper");
  uint32_t hellos_seen = device.hello_requests();
  while (!g_stop) {
    hal.flush_tx();
    pollfd pfd;
    pfd.fd = hal.in_fd();
    pfd.events = POLLIN;
    if (use_pty && hal.tx_pending()) pfd.events |= POLLOUT;
    pfd.revents = 0;
    // A READ in progress: no idling, unless the backlog is full (the host stopped reading;
    // POLLOUT wakes us when it reads again).
    const bool can_send = hal.link_room() >= tinyfed::link::kMaxFrameWire;
    const int wait_ms = device.output_pending() && can_send ? 0 : kLoopMs;
    if (!hal.link_eof()) poll(&pfd, 1, wait_ms);
    else poll(nullptr, 0, wait_ms);
    user.poll(hal, device);
    device.poll();
    if (device.hello_requests() != hellos_seen) {
      // The board's boot report (README, hardware checklist) follows a new host's HELLO.
      hellos_seen = device.hello_requests();
      device.report(LogLevel::kInfo, boot_report);
    }
    if (!use_pty && hal.link_eof()) break;  // stdin closed: the peer is gone
    if (!script_reported && !script_path.empty() && user.done() &&
        device.state() == tinyfed::link::State::kIdle) {
      script_reported = true;
      hal.log(LogLevel::kInfo, "script: done");
    }
    if (exit_after_script && script_reported && !hal.tx_pending()) break;
  }
  hal.flush_tx();
  hal.log(LogLevel::kInfo, g_stop ? "stopped by a signal" : "exiting");
  if (!symlink_path.empty() && use_pty) unlink(symlink_path.c_str());
  if (master >= 0) close(master);
  if (slave >= 0) close(slave);
  if (log_file != nullptr) fclose(log_file);
  return 0;
}
