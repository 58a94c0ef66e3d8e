// Stand-in for ArduinoBLE 2.0.1 src/utility/ATT.h (not included by ArduinoBLE.h; a sketch
// includes <utility/ATT.h>). mtu(handle) returns the ATT MTU agreed with the peer on that
// connection handle: 23 until the central's MTU exchange, then min(its request, the
// controller's ACL buffer - 9); 23 for a handle with no peer.
#pragma once
#include <stdint.h>

class ATTClass {
 public:
  virtual ~ATTClass();
  virtual bool connected() const;
  virtual bool connected(uint16_t handle) const;
  virtual uint16_t mtu(uint16_t handle) const;
  virtual bool disconnect();
};
extern ATTClass& ATT;
