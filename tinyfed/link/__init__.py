"""The device link protocol between a board and its gateway (serial and BLE alike).

:mod:`tinyfed.link.spec` is the single definition of every frame; ``python -m tinyfed.link.gen``
generates from it the typed message classes (:mod:`tinyfed.link.messages`), the firmware's C++
header ``firmware/core/link_spec.h`` and the frame vectors, and its ``--check`` fails when they
drift. :mod:`tinyfed.link.frame` is the frame codec (COBS, CRC-16); :mod:`tinyfed.link.client`
is the host's client (:class:`~tinyfed.link.client.BoardLink`), built in layers: ``channel``
(frames in and out, dispatch), ``requests`` (one command at a time, retries), ``download``
(go-back-N sender), ``upload`` (batched reader), ``events``, ``stats`` and ``errors``.
"""
