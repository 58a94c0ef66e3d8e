"""One MQTT session per application: the adapter of the aggregator, the gateway and the monitor.

:class:`MqttSession` owns a paho client (:func:`tinyfed.mqtt.session.make_client`: MQTT v5 or
the URL's ``?protocol=3.1.1``, TLS, credentials) and everything the three had each written for
themselves:

* **connecting** with paho's reconnect backoff (1-8 s), optionally with a persistent session
  (session expiry), an MQTT v5 Receive Maximum and manual acknowledgements;
* a **retained status** on ``status_topic`` whose Last Will is the ``will`` payload (the
  application's ``offline``), and the **orderly exit**: publish ``offline``, wait up to
  :data:`OFFLINE_WAIT_S` for its PUBACK, then disconnect (:meth:`MqttSession.close`, or
  :meth:`MqttSession.aclose` in an asyncio loop);
* **reconnect logging**: "connected to", "lost the broker ..., reconnecting", and a refused login
  once per cause and minute (:class:`~tinyfed.mqtt.session.Throttle`) instead of every 1-8 s;
* **one hand-off** from paho's network thread to the application. The network thread (or, for
  thousands of clients in one process, the asyncio loop driving the client:
  :class:`AsyncioDriver`) only turns each callback into an :data:`Event` and appends it to the
  session's :class:`Inbox`; it never runs application code, so nothing the application does
  (a database commit, scoring a model) can delay keep-alives or acknowledgements. The
  application takes the events in its own thread in one of three ways, all reading that inbox:
  :meth:`MqttSession.take` (a blocking batch, for a service loop with group commit),
  ``start(handler=...)`` (a worker thread calls the handler per event), or
  :meth:`MqttSession.start_in_loop` (the handler runs in the asyncio loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.subscribeoptions import SubscribeOptions

from tinyfed.mqtt.inbox import (
    PUT_POLL_S as PUT_POLL_S,
    Connected as Connected,
    Disconnected as Disconnected,
    Event as Event,
    Inbox as Inbox,
    Message as Message,
    Published as Published,
    Subscribed as Subscribed,
)
from tinyfed.mqtt.session import (
    BrokerUrl,
    Throttle,
    connect,
    make_client,
    publish_properties,
)

OFFLINE_WAIT_S = 2.0  #: how long an exit waits for the broker to acknowledge ``offline``
WORKER_POLL_S = 0.1  #: how often a handler thread looks whether the session was closed


#: Waits before a refused subscription is tried again (s); the last one repeats.
SUBSCRIBE_RETRY_S = (1.0, 2.0, 4.0, 8.0)


# ------------------------------------------------------------------ the session


class MqttSession:
    """One application's MQTT session (see the module's docstring).

    Args:
        broker: the broker.
        client_id: the MQTT client id (a persistent session is found again by it).
        logger: where connection events are logged (the application's own logger).
        status_topic: the application's retained status topic, if it has one.
        will: the Last Will on ``status_topic`` (retained, QoS 1): the ``offline`` status, or a
            function that makes it. MQTT fixes a Will at CONNECT, so a function is asked again
            before every reconnection: the Will then says when the connection that died was
            opened (its ``time``) and what the application was doing then, not the values of
            the process's first connection.
        persistent: keep the session at the broker (``clean_session`` off under 3.1.1; under
            v5 ``session_expiry`` decides).
        session_expiry: MQTT v5 session expiry interval in seconds (0: a clean start).
        receive_maximum: MQTT v5 Receive Maximum announced to the broker (None: the default).
        manual_ack: messages are acknowledged only by :meth:`ack` (else paho acknowledges each
            as it arrives).
        keepalive: MQTT keep-alive in seconds.
        on_lost: adds a note to the "lost the broker" line (e.g. messages buffered).
        pubacks: put a :class:`Published` event in the inbox for each PUBACK (the gateway's
            delivery needs them; a service that only publishes receipts does not).
        inbox_capacity: bound the inbox (see :class:`Inbox`); ignored when the asyncio driver
            fills it from the consumer's own thread (``start_in_loop(threaded=False)``).
    """

    def __init__(
        self,
        broker: BrokerUrl,
        client_id: str,
        *,
        logger: logging.Logger,
        status_topic: str | None = None,
        will: bytes | Callable[[], bytes] | None = None,
        persistent: bool = False,
        session_expiry: int = 0,
        receive_maximum: int | None = None,
        manual_ack: bool = False,
        keepalive: int = 15,
        on_lost: Callable[[], str] | None = None,
        pubacks: bool = False,
        inbox_capacity: int | None = None,
    ) -> None:
        self.broker = broker
        self.client_id = client_id
        self.status_topic = status_topic
        self._will = will
        self.inbox = Inbox(inbox_capacity)
        self._log = logger
        self._keepalive = keepalive
        self._session_expiry = session_expiry
        self._receive_maximum = receive_maximum
        self._on_lost = on_lost
        self._refusals = Throttle()
        self._up = False  #: connected, as far as the application has taken events
        self._closing = False
        self._driver: AsyncioDriver | None = None
        self._worker: threading.Thread | None = None
        self._handler: Callable[[Event], None] | None = None
        #: subscriptions awaiting their SUBACK: mid -> (topics, no_local, first mid, attempt)
        self._subs: dict[int, tuple[tuple[str, ...], frozenset[str], int, int]] = {}
        self._subs_lock = threading.Lock()
        client = make_client(
            broker,
            client_id,
            will_topic=status_topic if will is not None else None,
            will_payload=(will() if callable(will) else will) or b"",
            persistent=persistent,
        )
        client.manual_ack_set(manual_ack)
        client.on_connect = self._cb_connect
        client.on_disconnect = self._cb_disconnect
        client.on_subscribe = self._cb_subscribe
        client.on_message = self._cb_message
        if pubacks:
            client.on_publish = self._cb_publish
        self.client = client

    # -- life ------------------------------------------------------------------------------

    def start(self, *, handler: Callable[[Event], None] | None = None) -> None:
        """Connect, with paho's network thread; reconnects by itself until closed.

        Without ``handler`` the application takes the events with :meth:`take`; with one, a
        worker thread calls ``handler(event)`` for each, in order.
        """
        if handler is not None:
            self._handler = handler
            self._worker = threading.Thread(
                target=self._work, name=f"mqtt-{self.client_id}", daemon=True
            )
            self._worker.start()
        self._connect()
        self.client.loop_start()

    def start_in_loop(self, handler: Callable[[Event], None], *, threaded: bool = True) -> None:
        """Connect from the running asyncio loop; ``handler(event)`` runs in that loop.

        ``threaded``: paho's network thread reads the socket and the loop is woken for each
        event; False drives the client from the loop itself (:class:`AsyncioDriver`, no
        thread: thousands of sessions in one process).
        """
        loop = asyncio.get_running_loop()
        self._handler = handler
        if threaded:

            def wake() -> None:
                if not loop.is_closed():
                    with contextlib.suppress(RuntimeError):
                        loop.call_soon_threadsafe(self._pump)

            self.inbox.wake = wake
            self._connect()
            self.client.loop_start()
        else:
            self.inbox.wake = self._pump  # callbacks already run in the loop's thread
            self.inbox.capacity = None  # ... which must never wait for itself
            self._connect()
            self._driver = AsyncioDriver(self.client)
            self._driver.start()

    def _connect(self) -> None:
        connect(
            self.client,
            self.broker,
            keepalive=self._keepalive,
            session_expiry=self._session_expiry,
            receive_maximum=self._receive_maximum,
        )

    def close(self, offline: bytes | None = None) -> None:
        """Publish ``offline`` on the status topic (if connected), wait up to
        :data:`OFFLINE_WAIT_S` for its PUBACK, disconnect and stop (from a thread)."""
        self._closing = True
        self.inbox.close()  # a network thread waiting for room goes on (and can send)
        if offline is not None and self.client.is_connected():
            info = self.publish_status(offline)
            try:
                info.wait_for_publish(timeout=OFFLINE_WAIT_S)
            except (RuntimeError, ValueError) as exc:
                self._log.warning("could not publish the offline status: %s", exc)
        self.client.disconnect()
        self.client.loop_stop()
        worker, self._worker = self._worker, None
        if worker is not None and worker is not threading.current_thread():
            worker.join()

    async def aclose(self, offline: bytes | None = None) -> None:
        """:meth:`close` from the asyncio loop (waiting for the PUBACK without blocking it)."""
        self._closing = True
        self.inbox.close()
        if offline is not None and self.client.is_connected():
            info = self.publish_status(offline)
            deadline = time.monotonic() + OFFLINE_WAIT_S
            while not info.is_published() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        self.inbox.wake = None
        if self._driver is not None:
            await self._driver.stop()
        else:
            self.client.disconnect()
            self.client.loop_stop()

    @property
    def closing(self) -> bool:
        return self._closing

    # -- what the application does --------------------------------------------------------

    def take(self, timeout: float, *, linger: float = 0.0, limit: int = 1 << 30) -> list[Event]:
        """The events that arrived (:meth:`Inbox.take`), connection events logged."""
        events = self.inbox.take(timeout, linger=linger, limit=limit)
        for event in events:
            self._note(event)
        return events

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> paho.MQTTMessageInfo:
        """Publish at QoS 1; under MQTT v5 with the payload's Content Type and Payload Format
        Indicator (:func:`tinyfed.mqtt.topics.payload_format`)."""
        return self.client.publish(
            topic, payload, qos=1, retain=retain, properties=publish_properties(self.broker, topic)
        )

    def publish_status(self, payload: bytes) -> paho.MQTTMessageInfo:
        """Publish the application's retained status (QoS 1) on ``status_topic``."""
        assert self.status_topic is not None, "this session has no status topic"
        return self.publish(self.status_topic, payload, retain=True)

    def subscribe(self, topics: Sequence[str], *, no_local: Collection[str] = ()) -> int | None:
        """Subscribe to ``topics`` at QoS 1; the mid its :class:`Subscribed` will carry.

        ``no_local`` topics do not deliver our own publishes back (MQTT v5 only: under 3.1.1
        they come back, and the application must recognise them). A subscription the broker
        refuses (a SUBACK failure: not authorised, or a clustered broker electing the leader
        of its session store) is logged and tried again, after 1, 2, 4, then every 8 s while
        connected; :class:`Subscribed` comes once it is granted.
        """
        with self._subs_lock:
            mid = self._send_subscribe(tuple(topics), frozenset(no_local))
            if mid is not None:
                self._subs[mid] = (tuple(topics), frozenset(no_local), mid, 0)
        return mid

    def _send_subscribe(self, topics: tuple[str, ...], no_local: frozenset[str]) -> int | None:
        if self.broker.v5 and no_local:
            options: list[tuple[str, Any]] = [
                (t, SubscribeOptions(qos=1, noLocal=t in no_local)) for t in topics
            ]
            _, mid = self.client.subscribe(options)
        else:
            _, mid = self.client.subscribe([(t, 1) for t in topics])
        return mid

    def _retry_subscribe(
        self, topics: tuple[str, ...], no_local: frozenset[str], origin: int, attempt: int
    ) -> None:
        if self._closing or not self.client.is_connected():
            return  # the application subscribes anew when it connects again
        with self._subs_lock:
            mid = self._send_subscribe(topics, no_local)
            if mid is not None:
                self._subs[mid] = (topics, no_local, origin, attempt)

    def ack(self, message: Message) -> None:
        """Acknowledge ``message`` (sessions with manual acknowledgements)."""
        self.client.ack(message.mid, message.qos)

    def is_connected(self) -> bool:
        return self.client.is_connected()

    # -- handing events to the application ------------------------------------------------

    def _pump(self) -> None:
        handler = self._handler
        for event in self.inbox.drain():
            self._note(event)
            if handler is not None:
                handler(event)

    def _work(self) -> None:
        handler = self._handler
        assert handler is not None
        while not self._closing or len(self.inbox):
            event = self.inbox.get(WORKER_POLL_S)
            if event is None:
                continue
            self._note(event)
            try:
                handler(event)
            except Exception:  # one event must not end the session's hand-off
                self._log.exception("handling %s failed", type(event).__name__)

    def _note(self, event: Event) -> None:
        """Log a connection event, in the application's thread."""
        if isinstance(event, Connected):
            if event.failed:
                if self._refusals(event.reason):  # once per cause and minute
                    self._log.error(
                        "broker %s refused the connection: %s", self.broker, event.reason
                    )
                return
            self._up = True
            self._log.info("connected to %s", self.broker)
        elif isinstance(event, Disconnected):
            if self._up and not self._closing:
                note = self._on_lost() if self._on_lost is not None else ""
                self._log.warning(
                    "lost the broker %s (%s)%s; reconnecting", self.broker, event.reason, note
                )
            self._up = False

    # -- paho's network thread: events into the inbox, nothing else -----------------------

    def _cb_connect(
        self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        self.inbox.put(Connected(str(rc), bool(rc.is_failure)))

    def _cb_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        if callable(self._will) and self.status_topic is not None and not self._closing:
            # paho reconnects with the Will it holds: give it the next connection's now.
            client.will_set(
                self.status_topic,
                self._will(),
                qos=1,
                retain=True,
                properties=publish_properties(
                    self.broker, self.status_topic, PacketTypes.WILLMESSAGE
                ),
            )
        self.inbox.put(Disconnected(str(rc)))

    def _cb_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, rcs: Any, props: Any
    ) -> None:
        with self._subs_lock:
            pending = self._subs.pop(mid, None)
        refused = sorted({str(rc) for rc in rcs if getattr(rc, "is_failure", False)})
        if pending is None or not refused:
            self.inbox.put(Subscribed(mid if pending is None else pending[2]))
            return
        topics, no_local, origin, attempt = pending
        delay = SUBSCRIBE_RETRY_S[min(attempt, len(SUBSCRIBE_RETRY_S) - 1)]
        self._log.warning(
            "the broker %s refused the subscription to %s (%s): trying again in %g s",
            self.broker,
            ", ".join(topics),
            ", ".join(refused),
            delay,
        )
        timer = threading.Timer(
            delay, self._retry_subscribe, args=(topics, no_local, origin, attempt + 1)
        )
        timer.daemon = True
        timer.start()

    def _cb_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        self.inbox.put(Message(msg.topic, bytes(msg.payload), msg.mid, msg.qos, bool(msg.retain)))

    def _cb_publish(
        self, client: paho.Client, userdata: Any, mid: int, rc: Any, props: Any
    ) -> None:
        self.inbox.put(Published(mid, rc, bool(rc.is_failure)))


class AsyncioDriver:
    """Runs a paho client inside the running asyncio loop, without a network thread.

    Thousands of clients in one process (the fleet benchmark's simulated gateways) cannot each
    have a thread. The loop watches the client's socket instead: readable calls
    ``loop_read``, writable ``loop_write``, and a task calls ``loop_misc`` every second
    (keepalive, retries) and reconnects with backoff (1 s doubling to 8 s) when the
    connection is lost, as paho's own thread does. Callbacks run in the loop's thread.

    Args:
        client: a client made by :func:`~tinyfed.mqtt.session.make_client`, with
            :func:`~tinyfed.mqtt.session.connect` already called.
    """

    def __init__(self, client: paho.Client) -> None:
        self.client = client
        self._loop = asyncio.get_running_loop()
        self._sock: Any = None
        self._task: asyncio.Task[None] | None = None
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write

    def start(self) -> None:
        """Connect now and keep the connection up until :meth:`stop`."""
        self._task = self._loop.create_task(self._run(), name="mqtt")

    async def stop(self) -> None:
        """Disconnect cleanly (what is queued is written first) and stop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sock is not None:
            self.client.disconnect()
            with contextlib.suppress(OSError):
                self.client.loop_write()
        self._unwatch()

    async def _run(self) -> None:
        delay = 1.0
        while True:
            if self._sock is None:
                try:
                    self.client.reconnect()
                except OSError:
                    await asyncio.sleep(delay)
                    delay = min(8.0, delay * 2)
                    continue
                delay = 1.0
            self.client.loop_misc()
            await asyncio.sleep(1.0)

    def _unwatch(self) -> None:
        if self._sock is not None:
            self._loop.remove_reader(self._sock)
            self._loop.remove_writer(self._sock)
            self._sock = None

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._sock = sock
        self._loop.add_reader(sock, client.loop_read)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._unwatch()

    def _on_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._loop.add_writer(sock, client.loop_write)

    def _on_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._loop.remove_writer(sock)
