"""Keeps the database true to the hypervisor.

Three duties: follow the backend's state events; resync everything periodically (events can be
missed while disconnected); and at start-up, finish or roll back what a dead server process left
half done, then remove cloudlet-labelled orphans (backend objects the database does not know).
Objects without cloudlet's label are never touched.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
from typing import Any

from sqlalchemy import select, update

from cloudlet.db.models import Instance, IPAllocation, Network, Operation
from cloudlet.db.session import SessionFactory, transaction
from cloudlet.drivers.base import ComputeDriver, NetworkDriver, PowerState
from cloudlet.errors import CloudletError, NotFound
from cloudlet.services.events import Event, EventBus
from cloudlet.services.lifecycle import FROM_POWER, TRANSITIONAL, State
from cloudlet.services.networks import network_spec
from cloudlet.services.operations import Operations, OpStatus
from cloudlet.services.runners import Runners

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(
        self,
        sessions: SessionFactory,
        bus: EventBus,
        ops: Operations,
        runners: Runners,
        drivers: dict[str, ComputeDriver],
        network_driver: NetworkDriver,
        interval: float,
    ) -> None:
        """``drivers`` maps an instance kind ("vm", "container") to the driver that runs it."""
        self.sessions = sessions
        self.bus = bus
        self.ops = ops
        self.runners = runners
        self.drivers = drivers
        self.network_driver = network_driver
        self.interval = interval
        self._events: queue.Queue[tuple[str, str, PowerState] | None] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- start-up recovery -----------------------------------------------------------------------
    def recover(self) -> dict[str, int]:
        """Run once at start, before serving: finish/roll back interrupted work, clean orphans."""
        counts = {
            "rolled_back": 0,
            "finished_deletes": 0,
            "settled": 0,
            "orphans_removed": 0,
            "dhcp_removed": 0,
        }
        alive = self.runners.alive()
        with self.sessions() as s:
            in_flight = s.scalars(
                select(Operation).where(Operation.status.in_([OpStatus.PENDING, OpStatus.RUNNING]))
            )
            # Only the work of dead processes: a live replica's operations are its own business.
            ops = list(in_flight)
            stale = [op.id for op in ops if op.runner_id not in alive]
            live = [op.id for op in ops if op.runner_id in alive]
        for op_id in stale:
            self.ops.fail_interrupted(
                op_id, "the server stopped while this operation ran; its work was rolled back"
            )
        with transaction(self.sessions) as s:
            # Locks held by anything but a live replica's operation in flight are left-overs.
            s.execute(update(Instance).where(Instance.locked_by.not_in(live)).values(locked_by=None))
            unfinished = list(
                s.scalars(
                    select(Instance).where(
                        Instance.state.in_(list(TRANSITIONAL)), Instance.locked_by.is_(None)
                    )
                )
            )
        for inst in unfinished:
            driver = self.drivers.get(inst.kind)
            if driver is None:
                continue
            try:
                if inst.state in (State.PENDING, State.PROVISIONING, State.DELETING):
                    self._remove_instance(driver, inst.id)
                    key = "finished_deletes" if inst.state == State.DELETING else "rolled_back"
                    counts[key] += 1
                else:  # an interrupted stop: the instance is whatever the backend says it is now
                    self._settle(driver, inst.id)
                    counts["settled"] += 1
            except CloudletError as err:
                log.error("recovering %s instance %s failed: %s", inst.kind, inst.id, err.detail)
        self.ensure_networks()
        counts["orphans_removed"] = self._remove_orphan_instances()
        counts["dhcp_removed"] = self._remove_stray_dhcp_hosts()
        self.resync()
        if any(counts.values()):
            log.info("recovery: %s", counts)
        return counts

    def _remove_instance(self, driver: ComputeDriver, instance_id: str) -> None:
        driver.delete(instance_id)
        with transaction(self.sessions) as s:
            rows = s.execute(
                select(IPAllocation, Network.backend_name)
                .join(Network, Network.id == IPAllocation.network_id)
                .where(IPAllocation.instance_id == instance_id)
            ).all()
            for alloc, backend in rows:
                self.network_driver.remove_dhcp_host(backend, alloc.mac)
                s.delete(alloc)
            inst = s.get(Instance, instance_id)
            if inst is not None:
                s.delete(inst)

    def _settle(self, driver: ComputeDriver, instance_id: str) -> None:
        """Move a transitional instance to the backend's state (apply() leaves transitional alone)."""
        try:
            power = driver.state(instance_id)
        except NotFound:
            power = PowerState.MISSING
        with transaction(self.sessions) as s:
            inst = s.get(Instance, instance_id)
            if inst is not None:
                inst.state = FROM_POWER.get(power, State.ERROR)
                inst.error = "the backend lost this instance" if power is PowerState.MISSING else None

    def ensure_networks(self) -> None:
        with self.sessions() as s:
            nets = list(s.scalars(select(Network).where(Network.status == "active")))
            specs = [network_spec(s, n) for n in nets]
        for spec in specs:
            try:
                self.network_driver.ensure_network(spec)
            except CloudletError as err:
                log.error("network %s could not be restored: %s", spec.backend_name, err.detail)

    def _remove_orphan_instances(self) -> int:
        with self.sessions() as s:
            known = set(s.scalars(select(Instance.id)))
        removed = 0
        for kind, driver in self.drivers.items():
            try:
                backend_ids = {i.id for i in driver.list_instances()}
                orphans = (backend_ids | set(driver.residue())) - known
                for instance_id in orphans:
                    log.warning("removing orphan %s %s (not in the database)", kind, instance_id)
                    driver.delete(instance_id)
                    removed += 1
            except CloudletError as err:
                log.error("looking for orphan %s instances failed: %s", kind, err.detail)
        return removed

    def _remove_stray_dhcp_hosts(self) -> int:
        removed = 0
        with self.sessions() as s:
            nets = list(s.scalars(select(Network).where(Network.status == "active")))
            allocated = {(a.network_id, a.mac) for a in s.scalars(select(IPAllocation))}
        for net in nets:
            try:
                hosts = self.network_driver.dhcp_hosts(net.backend_name)
            except CloudletError:
                continue
            for host in hosts:
                if (net.id, host.mac) not in allocated:
                    self.network_driver.remove_dhcp_host(net.backend_name, host.mac)
                    removed += 1
        return removed

    # -- continuous ------------------------------------------------------------------------------
    def on_backend_event(self, kind: str, instance_id: str, state: PowerState) -> None:
        """Driver callback (any thread): queue and return at once."""
        self._events.put((kind, instance_id, state))

    def start(self) -> None:
        for kind, driver in self.drivers.items():
            driver.watch(functools.partial(self.on_backend_event, kind))
        for target, name in ((self._event_loop, "reconcile-events"), (self._resync_loop, "reconcile-resync")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        self._events.put(None)

    def _event_loop(self) -> None:
        while not self._stop.is_set():
            item = self._events.get()
            if item is None:
                return
            kind, instance_id, _reported = item
            try:
                # An event is a trigger, not the truth: it may be stale by the time it is handled
                # (a "started" event read after the user stopped the VM), so ask the backend now.
                try:
                    power = self.drivers[kind].state(instance_id)
                except NotFound:
                    power = PowerState.MISSING
                self.apply(instance_id, power)
            except Exception:
                log.exception("applying backend event %s failed", item)

    def _resync_loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.resync()
            except Exception:
                log.exception("periodic resync failed")

    def apply(self, instance_id: str, power: PowerState) -> None:
        """Move a settled, unlocked instance to what the backend reports."""
        target = FROM_POWER.get(power)
        if target is None:
            return
        error = "the backend lost this instance" if power is PowerState.MISSING else None
        if power is PowerState.CRASHED:
            error = "the guest crashed"
        with transaction(self.sessions) as s:
            inst = s.get(Instance, instance_id)
            if (
                inst is None
                or inst.locked_by is not None
                or inst.state in TRANSITIONAL
                or inst.state == target
            ):
                return
            inst.state = target
            inst.error = error
            payload: dict[str, Any] = {"id": inst.id, "name": inst.name, "state": inst.state}
            workspace_id = inst.workspace_id
        self.bus.publish(Event("instance.updated", workspace_id, payload))

    def resync(self) -> None:
        for kind, driver in self.drivers.items():
            try:
                states = {i.id: i.state for i in driver.list_instances()}
            except CloudletError as err:  # a backend that is away says nothing about its instances
                log.warning("resync of %s instances skipped: %s", kind, err.detail)
                continue
            with self.sessions() as s:
                rows = list(
                    s.scalars(select(Instance.id).where(Instance.locked_by.is_(None), Instance.kind == kind))
                )
            for instance_id in rows:
                self.apply(instance_id, states.get(instance_id, PowerState.MISSING))
