// tinyfed for the Arduino Nano 33 BLE Sense: on-device keyword training, federated over a
// serial or BLE link. setup() and loop() live in src/hal/arduino/main.cpp; this file exists
// because the Arduino IDE needs a sketch file named like its folder.
//
// The Arduino IDE compiles src/ recursively but cannot reach ../../core, so make the sketch
// folder first (firmware/README.md, "Flashing with the Arduino IDE"):
//
//   make -C firmware arduino-sketch     # -> firmware/build/arduino/tinyfed/{tinyfed.ino,src/}
//
// Libraries: ArduinoBLE 2.0.1 (Library Manager). Board: "Arduino Nano 33 BLE" (Arduino Mbed OS
// Nano Boards). PlatformIO users run `pio run -d firmware -t upload` instead.
// Button wiring (README "Wiring"): buttons to GND by default; for the paper's breadboard
// (buttons to 3.3 V with pull-down resistors) set TINYFED_BUTTON_WIRING to 1 at the top of
// src/hal/arduino/arduino_hal.h in the sketch folder (a #define here would not reach it).
// The libraries are named here too so that every Arduino IDE version finds them.
#include <ArduinoBLE.h>
#include <PDM.h>

#include "src/hal/arduino/arduino_hal.h"
