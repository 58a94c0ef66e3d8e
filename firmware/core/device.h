// The device: the board's whole behaviour as a non-blocking state machine over a Hal.
//
//   buttons (debounced) --> ARMED --release--> RECORDING --1 s--> COMPUTING --> IDLE
//   link frames ---------> commands, transfers (RECEIVING), events (HELLO, LOSS, INFER, ...)
//
// poll() is called from the main loop; it never waits (the longest thing it does is one
// feature computation and one training step, ~0.1 s on the Cortex-M4F). All memory is the
// Device object itself, which the port declares static (no heap): see kStaticBytes below and
// `make size` for the breakdown.
//
// Momentum and a new global model: when a model download is applied, the momentum buffer is
// reset to zero (it is the staging area of the download, so this costs no RAM). Reason: the
// velocity points along the board's previous local trajectory; keeping it would push the
// freshly averaged model back toward this board's own data, which worsens the loss jump after
// averaging on non-IID data (the paper's Fig. 8). The Python reference does the same
// (tinyfed.model.Trainer.reset_momentum). A download that fails (CRC, non-finite, aborted,
// timed out) leaves the weights untouched and the momentum zeroed: the same state as after a
// successful global update from the board's point of view, minus the new weights.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "dscnn.h"
#include "hal.h"
#include "head.h"
#include "link.h"
#include "link_spec.h"
#include "logmel.h"
#include "mfcc.h"
#include "nn.h"
#include "status.h"

namespace tinyfed {

// Firmware version reported in HELLO (major, minor, patch); bump with every release.
constexpr uint8_t kFwVersion[3] = {0, 2, 0};  // 0.2: RESET delay, round request, board HAL rework
// Debounce interval: a level must be stable this long to count. 20 ms covers the bounce of
// common tactile switches (typically < 10 ms) with margin and is far below a human press.
constexpr uint32_t kDebounceMs = 20;
// One recording: one second at 16 kHz, the paper's keyword length (docs/numerics.md: the MFCC
// takes exactly 16,000 samples).
constexpr size_t kRecordSamples = 16000;
static_assert(kRecordSamples == static_cast<size_t>(kAudioSamples), "MFCC input is 1 s");
// The paper's experiments run 10 local steps per round (the gateway may SET_PARAMS another).
constexpr uint16_t kDefaultLocalSteps = 10;
// A transfer with no frame for link::kXferTimeoutMs (link_spec.h) is abandoned: a gateway that
// vanished must not keep the board in RECEIVING forever.
using link::kXferTimeoutMs;
// Result display: the class whose output is highest and above 0.6 (nn_detect, the paper's
// rule) blinks its colour kBlinkMs on and kBlinkMs off (visible, and short enough not to delay
// the next press): kTrainBlinkCount times after a training step, kInferBlinkCount times after
// an inference, as the paper's inference button does.
constexpr uint32_t kBlinkMs = 150;
constexpr uint8_t kTrainBlinkCount = 3;
constexpr uint8_t kInferBlinkCount = 5;
// A recording that has not delivered its 16,000 samples after this long is abandoned (a dead
// or stopped microphone must not keep the board in RECORDING): three times the one second it
// needs; the board's PDM delivers 4,096-byte blocks, i.e. 128 ms late at most.
constexpr uint32_t kRecordTimeoutMs = 3000;
// RESET: the ACK is written, then the board waits this long before Hal::reboot() so that the
// ACK leaves over USB and over BLE (a notification goes out at the next connection event;
// centrals use intervals of 7.5-50 ms, so 250 ms covers several). Input meanwhile is dropped.
constexpr uint32_t kResetDelayMs = 250;
// The built-in LED also lights while a model transfers: during a download (RECEIVING), and
// during an upload for this long after the last GET_MODEL/READ (a host reads a window, then
// asks again after one round trip, so the LED stays on steadily through a whole upload).
constexpr uint32_t kUploadLedHoldMs = 300;
// Asking for a round from the board: holding the infer button (D5) this long, then releasing
// it, records nothing and sends LOG "event round_request ..." (README "Ask for a round now").
// Three seconds is well beyond a normal press (the paper's users hold a button for < 1 s).
constexpr uint32_t kRoundRequestHoldMs = 3000;
// The LOG text that starts a round request (the gateway matches this prefix).
constexpr const char* kRoundRequestEvent = "event round_request";
// Sizes of the transfer targets (spec.py XferTarget): the model, 650 float32 features, and
// one second of int16 audio.
constexpr uint32_t kModelBytes = static_cast<uint32_t>(kParams) * 4;        // 41,868
constexpr uint32_t kFeatureBytes = static_cast<uint32_t>(kFeatures) * 4;    // 2,600
constexpr uint32_t kAudioBytes = static_cast<uint32_t>(kRecordSamples) * 2;  // 32,000

struct DeviceConfig {
  float lr = kDefaultLearningRate;
  float momentum = kDefaultMomentum;
  uint16_t local_steps = kDefaultLocalSteps;
  uint32_t seed = kDefaultSeed;  // of the fresh model at every boot
  link::PipelineId pipeline = link::PipelineId::kCentroid;  // the better one (docs/features.md)
  // The model family (docs/learning.md): the paper's 650-16-3 network, or the frozen int8
  // extractor with a float head (pipeline must then be kLogmel40 and extractor set: the
  // board's flash copy, core/dscnn_weights.h, or a test's model).
  link::ArchId arch = link::ArchId::kFc650163;
  const DscnnWeights* extractor = nullptr;
};

// The dscnn family's head: K = the board's three classes, K * 65 floats (docs/learning.md).
constexpr uint32_t kHeadModelBytes = static_cast<uint32_t>(kOutputs * (kHeadDim + 1)) * 4;  // 780
constexpr uint32_t kLogmelInputBytes = static_cast<uint32_t>(kLogmelValues);  // 2,000 int8

// The dscnn family's working memory (28,480 B). A board runs one family, so it lives in the
// paper's momentum buffer (velocity_, 41,868 B), after the first kHeadModelBytes that stage a
// downloaded head: the dscnn family adds no RAM to the Device (docs/learning.md, README).
struct DscnnDeviceWork {
  DscnnWork extractor;
  LogmelWork logmel;
};
static_assert(kHeadModelBytes % 4 == 0, "the work area after the staged head stays aligned");
static_assert(kHeadModelBytes + sizeof(DscnnDeviceWork) <= sizeof(float) * kParams,
              "the dscnn work area fits in the paper's momentum buffer");

// Validates hyper-parameters as SET_PARAMS does: lr in (0, 10], momentum in [0, 1),
// local_steps >= 1 (spec.py SetParams).
bool params_valid(float lr, float momentum, uint16_t local_steps);

class Device {
 public:
  // (Re)initialises everything, like a power cycle: new boot id, fresh seeded model, zero
  // momentum, counters at 0, then sends HELLO. hal must outlive the device.
  Status begin(Hal* hal, const DeviceConfig& config);

  // One step of the main loop: link input, buttons, recording, computation, outputs.
  void poll();

  // A log line from the port (e.g. the board's boot diagnostics: microphone, BLE, button
  // wiring): to the HAL's log and as a LOG frame to the host.
  void report(LogLevel level, const char* text) { log_line(level, text, true); }

  // Read-only views for ports and tests.
  link::State state() const { return state_; }
  // True while a READ is still being answered (the next poll() sends more chunks): a main
  // loop that sleeps between polls should not sleep then.
  bool output_pending() const { return read_left_ > 0; }
  uint8_t leds() const { return leds_; }
  uint32_t boot_id() const { return boot_id_; }
  uint32_t model_round() const { return model_round_; }
  uint32_t steps_since_global() const { return steps_since_global_; }
  uint32_t total_steps() const { return total_steps_; }
  float lr() const { return lr_; }
  float momentum() const { return momentum_; }
  uint16_t local_steps() const { return local_steps_; }
  const float* params() const { return params_; }
  link::ArchId arch() const { return config_.arch; }
  uint32_t model_bytes() const { return model_bytes_; }  // what MODEL transfers carry
  const Head& head() const { return head_; }             // the dscnn family's head and store
  const float* velocity() const { return velocity_; }
  bool transfer_open() const { return xfer_.open; }
  // Model downloads applied since boot (the virtual board's script can wait for one).
  uint32_t models_applied() const { return models_applied_; }
  // HELLO_REQs answered: a host starts every conversation with one (a HAL that cannot see a
  // host arrive, like the virtual board's pty, sends its boot report after each).
  uint32_t hello_requests() const { return hello_requests_; }

 private:
  friend struct DeviceMemoryMap;  // tools/memory_map.cpp: the RAM breakdown of `make size`

  struct Transfer {
    bool open;
    link::XferTarget target;
    uint32_t total_len;
    uint32_t crc32;
    uint32_t meta;
    uint32_t next;          // bytes received in order
    uint32_t last_ack;      // next_offset of the last XFER_ACK sent
    uint8_t since_ack;      // in-order chunks since the last XFER_ACK
    bool gap_acked;         // an XFER_ACK was sent for the current gap
    uint32_t last_ms;       // time of the last frame of this transfer
  };
  enum class Pending : uint8_t { kNone, kButton, kHostAudio };

  // Link input and commands.
  void handle_frame(const link::Frame& f);
  void on_hello_req(const link::Frame& f);
  void on_set_params(const link::Frame& f);
  void on_xfer_begin(const link::Frame& f);
  void on_xfer_chunk(const link::Frame& f);
  void on_xfer_end(const link::Frame& f);
  void on_xfer_abort(const link::Frame& f);
  void on_get_model(const link::Frame& f);
  void on_read(const link::Frame& f);
  void on_reset(const link::Frame& f);
  void close_transfer(bool failed);
  uint8_t* staging(link::XferTarget target);

  // Buttons, recording, computation, LEDs.
  void poll_buttons(uint32_t now);
  void on_press(int button);
  void on_release(int button);
  void compute(uint8_t label, link::Source source, uint16_t ref_seq, bool from_audio);
  Status compute_dscnn(uint8_t label, bool from_audio, float* outputs, float* loss,
                       int* detected, const char** stage);
  uint32_t target_size(link::XferTarget t) const;
  DscnnDeviceWork& dscnn_work() {
    return *reinterpret_cast<DscnnDeviceWork*>(reinterpret_cast<uint8_t*>(velocity_) +
                                               kHeadModelBytes);
  }
  void poll_read();
  void poll_blink(uint32_t now);
  void poll_idle_leds();
  void link_switched();
  void request_round(uint32_t held_ms);
  void set_state(link::State s);
  void set_leds(uint8_t leds);
  void start_blink(uint8_t leds, uint8_t count);
  void flush_state();

  // Outputs.
  void send(link::MsgType type, const uint8_t* payload, size_t n);
  void send_hello();
  void send_ack(uint16_t ref_seq, uint8_t ref_type);
  void send_error(uint16_t ref_seq, link::ErrorCode code, const char* text);
  void send_xfer_ack(uint32_t next_offset);
  void log_line(LogLevel level, const char* text, bool to_link);

  Hal* hal_ = nullptr;
  DeviceConfig config_{};

  // ---- static memory: the budget `make size` reports (README "RAM budget") ----
  // The running model: the paper's network, or (dscnn family) the Head, whose first member is
  // its K * 65 parameters, so params_ is the model that transfers carry in either family.
  union {
    float params_[kParams];  // 41,868 B
    Head head_;              // ~23 KB: the head and its replay store of int8 embeddings
  };
  uint32_t model_bytes_ = kModelBytes;
  uint32_t feature_bytes_ = kFeatureBytes;
  float velocity_[kParams];   // 41,868 B: momentum (delta_w_prev); also MODEL staging
  int16_t audio_[kRecordSamples];  // 32,000 B: one recording; also FEATURES/AUDIO staging
  float features_[kFeatures];      // 2,600 B: the 650 MFCC features of one sample; the
                                   // dscnn family's 2,000 int8 inputs (logmel40) here too
  MfccWorkspace mfcc_ws_;          // MFCC working memory (mfcc.h)
  link::FrameParser parser_;       // RX: one encoded frame + its decoding (~490 B)
  uint8_t tx_payload_[link::kMaxPayload];  // TX: payload being built
  uint8_t tx_wire_[link::kMaxFrameWire];   // TX: its wire bytes
  uint8_t rx_chunk_[64];  // bytes read from the HAL per call (USB CDC packets are 64 B)

  // ---- state ----
  link::State state_ = link::State::kIdle;
  uint8_t leds_ = 0;
  uint16_t tx_seq_ = 0;
  uint32_t boot_id_ = 0;
  float lr_ = kDefaultLearningRate;
  float momentum_ = kDefaultMomentum;
  uint16_t local_steps_ = kDefaultLocalSteps;
  uint32_t model_round_ = 0;
  uint32_t steps_since_global_ = 0;
  uint32_t total_steps_ = 0;
  uint32_t models_applied_ = 0;
  uint32_t hello_requests_ = 0;
  Transfer xfer_{};
  // READ in progress: MODEL_CHUNK frames still to send, one per poll.
  uint32_t read_offset_ = 0;
  uint16_t read_left_ = 0;
  // Buttons: raw level, when it last changed, debounced level, the button being held.
  uint8_t btn_raw_ = 0;
  uint8_t btn_stable_ = 0;
  uint32_t btn_changed_ms_ = 0;
  int armed_ = -1;
  uint32_t armed_ms_ = 0;      // when the held button was pressed
  bool round_request_ = false;  // D5 held past kRoundRequestHoldMs: release asks for a round
  uint32_t record_ms_ = 0;     // when the recording started
  uint32_t upload_ms_ = 0;     // last GET_MODEL/READ (the upload LED)
  bool upload_seen_ = false;
  bool reset_pending_ = false;  // RESET acknowledged; reboot at reset_ms_ + kResetDelayMs
  uint32_t reset_ms_ = 0;
  // The sample waiting to be computed.
  Pending pending_ = Pending::kNone;
  uint8_t pending_label_ = link::kNoClass;
  uint16_t pending_ref_seq_ = 0;
  // Result blink: colour and remaining half-periods.
  uint8_t blink_leds_ = 0;
  uint8_t blink_left_ = 0;
  uint32_t blink_ms_ = 0;
  uint32_t now_ = 0;        // hal millis() at the start of this poll
  uint8_t state_sent_ = 0xFF;  // state|leds last reported in a STATE frame (0xFF: never)
  uint8_t leds_sent_ = 0xFF;
};

}  // namespace tinyfed
