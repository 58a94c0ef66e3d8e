"""The device link protocol between a board and its gateway (serial and BLE alike).

:mod:`tinyfed.link.spec` is the single definition of every frame; the firmware's C++ header
``firmware/core/link_spec.h`` is generated from it (``python -m tinyfed.link.gen``) and a test
fails when the two drift. :mod:`tinyfed.link.frame` is the frame codec (COBS, CRC-16).
"""
