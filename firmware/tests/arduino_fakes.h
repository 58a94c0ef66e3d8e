// Behavioural fakes of the Arduino mbed core, its PDM library, USB CDC and ArduinoBLE, behind
// the declarations of tools/arduino_stubs/: hal/arduino/arduino_hal.cpp runs on the host
// against them (tests/test_arduino_hal.cpp). Each fake does what the real library does in the
// respect the HAL depends on (the stubs' comments say which), and can misbehave on demand: a
// USB host that does not read, a central that vanishes mid-burst, a microphone that never
// delivers, a PDM that does not start. Host-only code (the STL is fine here).
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <string>
#include <vector>

namespace fake {

// Every library call of interest, in order ("rng.start", "ble.begin", "pdm.setGain 80", ...).
extern std::vector<std::string> events;
// Index of the first event starting with `prefix`, or -1.
int first_event(const char* prefix);
int count_events(const char* prefix);

// Time: millis(); delay(ms) advances it (and runs on_delay, e.g. to deliver a PDM block).
extern uint32_t now_ms;
extern void (*on_delay)();

// RNG bytes handed out (one per VALRDY) and the FICR device id.
extern uint8_t rng_bytes[4];
extern uint32_t device_id[2];

// Pins. A board is wired one of two ways (README "Wiring"); pressed[i] is D2+i held.
enum class Board { kPullUpToGnd, kPullDownTo3v3 };
extern Board board;
extern bool pressed[4];
extern int pin_mode[32];      // PinMode per pin, -1 = never set
extern int pin_level[32];     // last digitalWrite per pin

// USB CDC.
extern bool usb_dtr;               // a terminal has the port open
extern bool usb_host_reads;        // completes each packet at once; false: packets stay in flight
extern bool usb_in_flight;         // a packet waits for the host
extern std::vector<uint8_t> usb_received;  // what the host got
extern std::vector<uint8_t> usb_to_board;  // what the host sent, not yet read
extern int usb_operator_bool_calls, usb_write_calls, usb_available_calls, usb_read_calls,
    usb_readbytes_calls, usb_send_nb_calls;
void usb_host_read_packet();       // the host takes the packet in flight

// PDM.
extern bool pdm_begin_ok;
extern int pdm_gain, pdm_buffer_size;
extern bool pdm_running;
extern bool pdm_overflowed;        // a block arrived before the previous was read: stopped
// One block of the PDM's buffer size, filled with consecutive sample values from `first`.
void pdm_deliver_block(int16_t first);

// BLE.
extern bool ble_begin_ok;
extern bool ble_connected;
extern bool ble_subscribed;
extern uint16_t ble_mtu;           // what ATT.mtu() answers for the connection's handle
extern uint16_t ble_handle;
extern int ble_drop_after_notifications;  // -1: never; else the central vanishes after N
extern std::vector<std::vector<uint8_t>> notifications;  // as the central got them
extern int ble_connected_calls;
void ble_central_writes(const uint8_t* data, size_t n);  // delivered at the next BLE.poll()

// Puts every fake back to a fresh, well-behaved board (USB host present and reading).
void reset();

}  // namespace fake
