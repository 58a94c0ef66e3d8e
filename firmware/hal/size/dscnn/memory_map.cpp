// The dscnn family's static RAM for `make size`, like tools/memory_map.cpp for the Device:
// compiled for the Cortex-M4F, never linked; `arm-none-eabi-nm -S` reads each array's size as
// the target compiler lays the objects out. The buffers inside logmel.o, dscnn.o and head.o
// are reported from those objects' own .bss (Makefile).
#include "dscnn.h"
#include "head.h"

extern "C" {
// The Head object the device would hold: K <= 8 parameters, the 320-embedding ring with
// labels, the pass order, counters.
char dram_1_head_params_store_order[sizeof(tinyfed::Head)];
// Of which the replay store alone (320 x 64 int8 + 320 labels).
char dram_2_of_which_replay_store[sizeof(tinyfed::Head::store) + sizeof(tinyfed::Head::labels)];
// The extractor's activations (DscnnWork: conv0 rows + ping-pong maps). The Device lends them
// the paper's momentum buffer (core/device.h DscnnDeviceWork), with logmel40's float map.
char dram_3_of_dscnn_o_activations[tinyfed::kDscnnConv0Rows + tinyfed::kDscnnBufA +
                                    tinyfed::kDscnnBufB];
// The int8 input map (the device's, 50 x 40).
char dram_4_input_int8[tinyfed::kDscnnInput];
}
