// The static RAM breakdown of `make size`. This file is compiled for the Cortex-M4F but never
// linked: each array below is as large as one buffer of the Device, so
// `arm-none-eabi-nm -S memory_map.o` reads the sizes exactly as the target compiler lays them
// out (struct padding included).
#include "device.h"

namespace tinyfed {

struct DeviceMemoryMap {
  static constexpr size_t kParams = sizeof(Device::params_);
  static constexpr size_t kVelocity = sizeof(Device::velocity_);
  static constexpr size_t kAudio = sizeof(Device::audio_);
  static constexpr size_t kFeatures = sizeof(Device::features_);
  static constexpr size_t kMfcc = sizeof(Device::mfcc_ws_);
  static constexpr size_t kLinkRx = sizeof(Device::parser_) + sizeof(Device::rx_chunk_);
  static constexpr size_t kLinkTx = sizeof(Device::tx_payload_) + sizeof(Device::tx_wire_);
  static constexpr size_t kTotal = sizeof(Device);
  static constexpr size_t kOther =
      kTotal - kParams - kVelocity - kAudio - kFeatures - kMfcc - kLinkRx - kLinkTx;
};

}  // namespace tinyfed

using M = tinyfed::DeviceMemoryMap;
// Names sort in the order printed by `make size` (nm -n would not help: all are in .bss).
extern "C" {
char ram_1_params_weights[M::kParams];
char ram_2_momentum_and_model_staging[M::kVelocity];
char ram_3_audio_int16x16000_and_sample_staging[M::kAudio];
char ram_4_features_650[M::kFeatures];
char ram_5_mfcc_fft_workspace[M::kMfcc];
char ram_6_link_rx_parser[M::kLinkRx];
char ram_7_link_tx_buffers[M::kLinkTx];
char ram_8_state_counters_transfer[M::kOther];
char ram_9_device_total[M::kTotal];
}
