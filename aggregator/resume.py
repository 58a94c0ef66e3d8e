"""Resuming the round machine from the store: where the aggregator takes up after a restart.

:func:`open_machine` builds the :class:`~tinyfed.aggregator.rounds.RoundMachine` from what the
:class:`~tinyfed.aggregator.store.Store` holds (round, attempt, counted and rejected updates,
FedAvgM's velocity), or starts round 0 in a new database; the service calls it at start and
again whenever handling a message or closing a round failed half-way.
"""

from __future__ import annotations

import logging

from tinyfed.aggregator.rounds import RoundMachine
from tinyfed.aggregator.settings import Settings
from tinyfed.aggregator.store import Store
from tinyfed.errors import ModelError, UsageError
from tinyfed.model import families
from tinyfed.mqtt.contract import GlobalModel

log = logging.getLogger("tinyfed.aggregator.service")  # people and tests filter on this name


def _stored_family(store: Store, meta: dict[str, str]) -> str | None:
    """The model family of the fleet in ``store`` (None: a new database).

    From the ``model`` fact, or for a database made before families existed, from the ``arch``
    of its latest global model.
    """
    if "model" in meta:
        return meta["model"]
    try:
        g, _ = store.global_model()
    except LookupError:
        return None
    except ModelError as exc:  # an arch this version does not know
        raise UsageError(f"database {store.path}: {exc}") from None
    return families.by_arch(g.arch).name


def open_machine(
    settings: Settings, store: Store, now: float, *, online: frozenset[str] = frozenset()
) -> RoundMachine:
    """Resume the round machine from ``store``, or start round 0 in a new database.

    ``online`` are the workers known to be online (kept when the machine is rebuilt).
    """
    meta = store.meta()
    family = settings.family
    held = _stored_family(store, meta)
    if held is not None and held != family.name:
        raise UsageError(
            f"database {store.path} holds a fleet of the {held} model family, not {family.name}: "
            f"use --model {held} or another --db (a fleet never changes family)"
        )
    for key, value in (("fleet", settings.fleet), ("pipeline", settings.pipeline)):
        if key in meta and meta[key] != value:
            raise UsageError(
                f"database {store.path} belongs to {key} {meta[key]!r}, not {value!r}: "
                f"use --{key} {meta[key]} or another --db"
            )
    snapshot = store.load()
    if snapshot is None:
        if settings.init is not None:
            params, made = family.load(settings.init), f"--init {settings.init}"
        else:
            params = family.init(scheme=settings.init_scheme)
            made = f"the {settings.init_scheme} init"
        first = GlobalModel(
            round=0,
            params=params,
            hyper=settings.hyper,
            pipeline=settings.pipeline,
            arch=family.arch,
            created=now,
        )
        machine = RoundMachine(
            policy=settings.policy,
            strategy=settings.strategy,
            hyper=settings.hyper,
            current=first,
            now=now,
            online=online,
            source_for=lambda r: lambda only: store.round_updates(r, only),
        )
        store.set_meta(fleet=settings.fleet, pipeline=settings.pipeline, model=family.name)
        store.initialise(first, machine.opening())
        log.info(
            "new database %s: %s family (%s, %d parameters), global model 0 is %s from %s",
            store.path,
            family.name,
            family.arch,
            family.n_params,
            first.sha256[:12],
            made,
        )
        return machine
    if settings.init is not None:
        log.warning(
            "--init %s ignored: %s already holds the fleet's models", settings.init, store.path
        )
    # The deadline restarts now: while the aggregator was down nobody could be told anything.
    machine = RoundMachine(
        policy=settings.policy,
        strategy=settings.strategy,
        hyper=settings.hyper,
        current=snapshot.current,
        velocity=snapshot.velocity,
        now=now,
        attempt=snapshot.opening.attempt,
        first_opened=snapshot.first_opened,
        expected=snapshot.opening.expected,
        counted=snapshot.counted,
        rejected=snapshot.rejected,
        online=online,
        source_for=lambda r: lambda only: store.round_updates(r, only),
    )
    log.info(
        "resumed round %d attempt %d with %d accepted updates (%s)",
        machine.number,
        machine.attempt,
        len(snapshot.counted),
        ", ".join(machine.reported) or "none yet",
    )
    return machine
