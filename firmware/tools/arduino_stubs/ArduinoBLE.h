// Stand-in for ArduinoBLE 2.0.1 (src/ArduinoBLE.h and what it includes): the signatures
// tinyfed uses, copied from BLELocalDevice.h, BLECharacteristic.h, BLEService.h,
// BLEProperty.h, BLEDevice.h. Behaviour the HAL relies on (from the library's sources):
//   * BLECharacteristic::writeValue() on a notifying characteristic sends one notification
//     through ATTClass::handleNotify, which truncates the value to MTU - 3 bytes and calls
//     HCIClass::sendAclPkt, which busy-waits while the controller's buffers are full;
//   * BLE.connected() runs HCI.poll() (event handlers may run inside it);
//   * the BLEWritten handler runs inside BLE.poll()/HCI.poll(), never in an interrupt.
#pragma once
#include <stdint.h>

enum BLEProperty {
  BLEBroadcast = 0x01,
  BLERead = 0x02,
  BLEWriteWithoutResponse = 0x04,
  BLEWrite = 0x08,
  BLENotify = 0x10,
  BLEIndicate = 0x20,
};
enum BLECharacteristicEvent {
  BLESubscribed = 0,
  BLEUnsubscribed = 1,
  BLEWritten = 3,
  BLEUpdated = BLEWritten,
  BLECharacteristicEventLast
};
enum BLEDeviceEvent { BLEConnected = 0, BLEDisconnected = 1, BLEDiscovered = 2, BLEDeviceLastEvent };

class BLEDevice {
 public:
  BLEDevice();
  virtual ~BLEDevice();
  virtual bool connected() const;
  virtual bool disconnect();
};
typedef void (*BLEDeviceEventHandler)(BLEDevice device);

class BLECharacteristic;
typedef void (*BLECharacteristicEventHandler)(BLEDevice device, BLECharacteristic characteristic);
class BLECharacteristic {
 public:
  BLECharacteristic();
  BLECharacteristic(const char* uuid, uint16_t permissions, int valueSize,
                    bool fixedLength = false);
  BLECharacteristic(const BLECharacteristic& other);
  virtual ~BLECharacteristic();
  int valueSize() const;
  const uint8_t* value() const;
  int valueLength() const;
  int writeValue(const uint8_t value[], int length, bool withResponse = true);
  bool subscribed();
  void setEventHandler(int event, BLECharacteristicEventHandler eventHandler);
  void* local_ = nullptr;  // like the real class: its BLELocalCharacteristic (fakes only)
};

class BLEService {
 public:
  BLEService();
  BLEService(const char* uuid);
  virtual ~BLEService();
  void addCharacteristic(BLECharacteristic& characteristic);
};

class BLELocalDevice {
 public:
  virtual ~BLELocalDevice();
  virtual int begin();
  virtual void end();
  virtual void poll();
  virtual void poll(unsigned long timeout);
  virtual bool connected() const;
  virtual bool disconnect();
  virtual bool setAdvertisedService(const BLEService& service);
  virtual bool setLocalName(const char* localName);
  virtual void setDeviceName(const char* deviceName);
  virtual void addService(BLEService& service);
  virtual int advertise();
  virtual void stopAdvertise();
  virtual BLEDevice central();
  virtual void setEventHandler(BLEDeviceEvent event, BLEDeviceEventHandler eventHandler);
};
extern BLELocalDevice& BLE;
