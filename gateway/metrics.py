"""The gateway's Prometheus metrics (``tinyfed gateway --metrics :9103``).

Read from the running bridge at each scrape (a ``prometheus_client`` collector: nothing on the
hot path counts twice), from a registry of this gateway's own. Names start with
``tinyfed_gateway_``, and every sample carries the ``worker`` label (the board's worker id, once
its HELLO named it):

* ``board_connected``, ``broker_connected``: 1 while the board link / the broker is up;
* ``mqtt_connections_total``: connections made to the broker (more than 1: reconnections);
* ``link_round_trips_total``, ``link_retries_total``, ``link_bad_frames_total``,
  ``link_lost_frames_total``, ``link_bytes_total{direction}``: the current board link's counters
  (a new link after the board reconnects starts again from 0, which Prometheus reads as a
  counter reset);
* ``transfer_seconds{what}``, ``transfer_retries{what}``, ``transfer_bytes{what}``: the last
  transfer of each kind (model down, model up);
* ``updates_published_total``: model updates this process handed to MQTT;
  ``round_requests_total``: round requests (the board's D5 held 3 s) it handed to MQTT;
  ``outbox_messages``: messages not yet delivered (updates wait for the aggregator's receipt).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from tinyfed.listen import MetricsEndpoint

if TYPE_CHECKING:
    from tinyfed.gateway.bridge import Bridge

log = logging.getLogger(__name__)


class GatewayCollector(Collector):
    """Reads a :class:`~tinyfed.gateway.bridge.Bridge` at each scrape."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    def collect(self) -> Iterator[Any]:
        b = self.bridge
        worker = (b.state.worker_id if b.state is not None else None) or b.settings.worker_id or ""
        labels, values = ["worker"], [worker]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(f"tinyfed_gateway_{name}", doc, labels=labels)
            g.add_metric(values, value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(f"tinyfed_gateway_{name}", doc, labels=labels)
            c.add_metric(values, value)
            return c

        link, uplink = b.link, b.uplink
        yield gauge("board_connected", "1 while the board link is up", float(link is not None))
        yield gauge(
            "broker_connected",
            "1 while the broker connection is up",
            float(uplink is not None and uplink.connected),
        )
        yield counter(
            "mqtt_connections",
            "connections made to the broker (more than 1: reconnections)",
            uplink.connections if uplink is not None else 0,
        )
        stats = link.stats if link is not None else None
        for name, doc, attr in (
            ("link_round_trips", "times the gateway waited for the board's answer", "round_trips"),
            ("link_retries", "commands or windows sent to the board again", "retries"),
            ("link_bad_frames", "frames from the board the codec rejected", "bad_frames"),
            ("link_lost_frames", "gaps in the board's frame sequence numbers", "lost_frames"),
        ):
            yield counter(name, doc, getattr(stats, attr) if stats is not None else 0)
        traffic = CounterMetricFamily(
            "tinyfed_gateway_link_bytes", "bytes on the board link", labels=[*labels, "direction"]
        )
        traffic.add_metric([worker, "out"], stats.bytes_out if stats is not None else 0)
        traffic.add_metric([worker, "in"], stats.bytes_in if stats is not None else 0)
        yield traffic
        last: dict[str, Any] = {}
        try:  # read from the scrape's thread while the gateway's loop may append
            records = list(link.transfers) if link is not None else []
        except RuntimeError:  # deque mutated during the copy: these figures wait a scrape
            records = []
        for record in records:
            last[record.what] = record  # the newest of each kind
        for name, doc, attr in (
            ("transfer_seconds", "the last transfer of each kind: how long it took", "seconds"),
            ("transfer_retries", "the last transfer of each kind: its retries", "retries"),
            ("transfer_bytes", "the last transfer of each kind: its size", "size"),
        ):
            g = GaugeMetricFamily(f"tinyfed_gateway_{name}", doc, labels=[*labels, "what"])
            for what, record in sorted(last.items()):
                g.add_metric([worker, what], float(getattr(record, attr)))
            yield g
        yield counter(
            "updates_published", "model updates this process handed to MQTT", float(b.uploads)
        )
        yield counter(
            "round_requests", "round requests this process handed to MQTT", float(b.requests)
        )
        yield gauge("outbox_messages", "messages not yet delivered", float(len(b.outbox)))


class GatewayMetrics(MetricsEndpoint):
    """The metrics endpoint of one gateway."""

    def __init__(self, bridge: Bridge) -> None:
        super().__init__(CollectorRegistry())
        self.registry.register(GatewayCollector(bridge))
