"""Fingerprint stage: claim a run's open ports per host, run nmap over batches, reap."""

import logging
import secrets
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from scanner.findings import Finding
from scanner.models import PortObservation, RunState, ScanRun
from scanner.services import publish
from scanner.services.liveness import HEARTBEAT_EVERY_S, Heartbeat, stale_before
from scanner.services.results import FINGERPRINT_FIELDS
from scanner.services.runs import run_advance

logger = logging.getLogger(__name__)

# How often a task writes the ports nmap has named so far (its progress) while nmap runs.
RECORD_EVERY_S = HEARTBEAT_EVERY_S


class ClaimHeartbeat(Heartbeat):
    """Keeps a fingerprint task's claim on its ports alive while nmap runs (a side thread)."""

    def __init__(self, *, run_id: int, token: str):
        self.ports = PortObservation.objects.filter(
            run_id=run_id, fingerprint_claim=token, fingerprinted=False
        )
        super().__init__(self._beat)

    def _beat(self) -> None:
        self.ports.update(fingerprint_claimed_at=timezone.now())


class FingerprintLedger:
    """Ports of one task: what nmap has named or finished, written by the task's own thread.

    nmap's threads only note results here (no database access there); record() writes the
    new ones every RECORD_EVERY_S while nmap runs, so a port named in the first second is
    on the run's page then, not when the slowest port of its batch is done.
    """

    def __init__(self, pending: list[PortObservation]):
        self.by_key = {(obs.host.ip, obs.port): obs for obs in pending}
        self.lock = threading.Lock()
        self.named: dict[tuple[str, int], Finding] = {}  # named by nmap, not written yet
        self.finished: list[tuple[dict[str, list[int]], dict]] = []  # not written yet
        self.done: set[tuple[str, int]] = set()

    def name(self, finding: Finding) -> None:
        """A port nmap has named while it runs (on_finding)."""
        with self.lock:
            self.named[(finding.ip, finding.port)] = finding

    def finish(self, batch: dict[str, list[int]], results: dict) -> None:
        """A batch's nmap run has ended: every port of it gets its final result."""
        with self.lock:
            self.finished.append((batch, results))

    def record(self) -> int:
        """Write what nmap said since the last call; returns the number of ports written."""
        with self.lock:
            named, self.named = self.named, {}
            finished, self.finished = self.finished, []
        final: dict[tuple[str, int], Finding | None] = {}
        for batch, results in finished:
            for ip, ports in batch.items():
                result = results[ip]
                got = {f.port for f in result.findings}
                unnamed = [port for port in ports if port not in got]
                if result.error and unnamed:
                    # Unknown, never closed: the port stays open in this run, just unnamed;
                    # the next run fingerprints it again (every run starts unfingerprinted).
                    logger.warning("fingerprint of %s: %s; unnamed: %s", ip, result.error, unnamed)
                final.update(((ip, port), None) for port in ports)
                final.update(((f.ip, f.port), f) for f in result.findings if f.port in ports)
        changed = []
        for key, finding in [*named.items(), *final.items()]:
            obs = self.by_key.get(key)
            if obs is None or (key in self.done and key not in final):
                continue
            if finding is not None:
                for name in FINGERPRINT_FIELDS:
                    setattr(obs, name, getattr(finding, name)[:500])
            obs.fingerprinted = True
            self.done.add(key)
            changed.append(obs)
        changed = list({obs.pk: obs for obs in changed}.values())
        if changed:
            PortObservation.objects.bulk_update(changed, [*FINGERPRINT_FIELDS, "fingerprinted"])
        return len(changed)


def fingerprint_run_hosts(*, run_id: int, ips: list[str], claim: str = "") -> int:
    """nmap -sV the ports this run found open on these hosts; returns ports fingerprinted.

    Each port is written as soon as nmap names it; a port still unnamed after
    PORTMON_NMAP_PORT_TIMEOUT stays open and unnamed. claim (at most 32 characters) is the
    task's own token: a redelivered task (its worker died) takes back the ports its first
    delivery had claimed, and the reaper hands abandoned ports to a new task under a token
    of its own (fingerprints_reap).
    """
    from scanner.engines import nmap

    token = claim[:32] or secrets.token_hex(16)
    PortObservation.objects.filter(
        Q(fingerprint_claim="")
        | Q(fingerprint_claim=token)
        | Q(fingerprint_claimed_at__lt=stale_before()),
        run_id=run_id,
        host__ip__in=ips,
        fingerprinted=False,
    ).update(fingerprint_claim=token, fingerprint_claimed_at=timezone.now())
    pending = list(
        PortObservation.objects.filter(run_id=run_id, fingerprint_claim=token, fingerprinted=False)
        .select_related("host")
        .order_by("port")
    )
    # TCP and UDP ports are named by separate nmap runs (-sT / -sU), each with its ledger:
    # 53/tcp and 53/udp of one host are two ports.
    ledgers: dict[str, FingerprintLedger] = {}
    jobs: list[tuple[str, dict[str, list[int]]]] = []
    for proto in ("tcp", "udp"):
        mine = [obs for obs in pending if obs.proto == proto]
        if not mine:
            continue
        ports_by_host: dict[str, list[int]] = {}
        for obs in mine:
            ports_by_host.setdefault(obs.host.ip, []).append(obs.port)
        ledgers[proto] = FingerprintLedger(mine)
        jobs += [(proto, batch) for batch in nmap.batches(ports_by_host)]
    options = {
        proto: nmap.FingerprintOptions(
            timeout=settings.PORTMON_NMAP_PORT_TIMEOUT,
            proto=proto,
            intensity=nmap.UDP_VERSION_INTENSITY if proto == "udp" else None,
            nice=settings.PORTMON_NMAP_NICE,
            null_wait_ms=settings.PORTMON_NMAP_NULL_WAIT_MS,
            generic_lines_wait_ms=settings.PORTMON_NMAP_GENERICLINES_WAIT_MS,
        )
        for proto in ledgers
    }
    # Batches run side by side (each probes all its ports at once), so that every port has
    # its whole timeout and the task ends within about one timeout, as its limits assume.
    with (
        ClaimHeartbeat(run_id=run_id, token=token),
        ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool,
    ):
        running = {
            # A host that timed out has its unnamed ports settled after nmap's first run.
            pool.submit(
                nmap.fingerprint_many,
                hosts=batch,
                options=options[proto],
                on_finding=ledgers[proto].name,
                on_first_run=partial(ledgers[proto].finish, batch),
            ): (proto, batch)
            for proto, batch in jobs
        }
        while running:
            done, _ = wait(running, timeout=RECORD_EVERY_S, return_when=FIRST_COMPLETED)
            for future in done:
                proto, batch = running.pop(future)
                ledgers[proto].finish(batch, future.result())
            for ledger in ledgers.values():
                ledger.record()
    for ledger in ledgers.values():
        ledger.record()
    run_advance(run_id=run_id)
    return len(pending)


def fingerprint_abandon(*, run_id: int, claim: str, reason: str) -> int:
    """A fingerprint task killed by its hard limit: its ports stay open, unnamed (unknown).

    nmap already had its host timeout; running the same hosts again would hang again.
    """
    if not claim:
        return 0
    gave_up = PortObservation.objects.filter(
        run_id=run_id, fingerprint_claim=claim[:32], fingerprinted=False
    ).update(fingerprinted=True)
    logger.warning("run %s: %d port(s) left unnamed: %s", run_id, gave_up, reason)
    run_advance(run_id=run_id)
    return gave_up


def fingerprints_reap() -> int:
    """Queue again the ports of fingerprint tasks that died or whose message was lost.

    - A claim whose heartbeat stopped: its task died without a redelivery (hard time limit;
      Celery acknowledges those).
    - Ports no task claimed, in a run fingerprinting for PORTMON_REQUEUE_AFTER in which no
      task is at work (no live claim): their messages were lost (a broker restart).
    Each set of ports gets a fresh token (and time) and one task that claims exactly those
    ports. Returns the number of ports handed on.
    """
    waiting = PortObservation.objects.filter(
        run__state=RunState.FINGERPRINTING, fingerprinted=False
    )
    dead_claims = waiting.filter(fingerprint_claimed_at__lt=stale_before()).exclude(
        fingerprint_claim=""
    )
    quiet_before = timezone.now() - timedelta(seconds=settings.PORTMON_REQUEUE_AFTER)
    lost = waiting.filter(fingerprint_claim="", run__in=_runs_fingerprint_idle(quiet_before))
    handed = 0
    for abandoned in (dead_claims, lost):
        hosts: dict[int, set[str]] = {}
        for run_id, ip in abandoned.values_list("run_id", "host__ip"):
            hosts.setdefault(run_id, set()).add(ip)
        for run_id, ips in hosts.items():
            token = secrets.token_hex(16)
            handed += abandoned.filter(run_id=run_id).update(
                fingerprint_claim=token, fingerprint_claimed_at=timezone.now()
            )
            publish.fingerprints_publish(run_id=run_id, ips=sorted(ips), claim=token)
    if handed:
        logger.warning("re-queued %d port(s) whose fingerprint task died or was lost", handed)
    return handed


def _runs_fingerprint_idle(quiet_before: datetime) -> list[int]:
    """Runs fingerprinting since before quiet_before in which no task holds a live claim."""
    runs = list(
        ScanRun.objects.filter(
            state=RunState.FINGERPRINTING, fingerprinting_at__lt=quiet_before
        ).values_list("pk", flat=True)
    )
    busy = set(
        PortObservation.objects.filter(
            run__in=runs, fingerprinted=False, fingerprint_claimed_at__gte=stale_before()
        ).values_list("run_id", flat=True)
    )
    return [run_id for run_id in runs if run_id not in busy]
