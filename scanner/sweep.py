"""The sweep of one shard: an engine run with progress, streamed findings and re-probes."""

import ipaddress
import logging
import time
from collections import Counter
from dataclasses import replace

from django.conf import settings
from django.utils import timezone

from scanner import synproxy
from scanner.engines import routes
from scanner.engines.options import MasscanOptions, SweepEvents, SweepOptions
from scanner.findings import Finding
from scanner.models import Engine, ScanShard, ShardState
from scanner.recall import ProbeLedger, reprobe_plan
from scanner.services import publish
from scanner.services.liveness import Heartbeat
from scanner.services.probes import connect_probes, udp_probes
from scanner.services.results import host_answering_all_record, observations_record
from scanner.services.scope import stored_targets_guard
from scanner.services.shards import shard_route_plan_check
from scanner.targets import GuardedTargets, count_ports, parse_ports

logger = logging.getLogger(__name__)

STREAM_FINGERPRINT_EVERY_S = 5.0
# The window once the sweep should end within one: a port found then is not held until the
# sweep's end, where its nmap run would be the run's tail.
STREAM_FINGERPRINT_TAIL_S = 1.0


def stream_window(elapsed_s: float, percent: float) -> float:
    """How long FindingStream gathers hosts before it queues them, elapsed_s into a sweep
    that is percent done: STREAM_FINGERPRINT_EVERY_S, or STREAM_FINGERPRINT_TAIL_S once the
    sweep at its pace so far ends within that."""
    if percent <= 0:
        return STREAM_FINGERPRINT_EVERY_S
    remaining = elapsed_s * (100 - min(percent, 100.0)) / percent
    if remaining <= STREAM_FINGERPRINT_EVERY_S:
        return STREAM_FINGERPRINT_TAIL_S
    return STREAM_FINGERPRINT_EVERY_S


class ShardProgress(Heartbeat):
    """Collects engine progress and writes it, with the claim's heartbeat, from a side thread.

    Engines call back from inside their event loop, where Django forbids database access;
    the callback only stores numbers, the thread writes them every HEARTBEAT_EVERY_S. The
    write is also the heartbeat: while it lands, no one else takes the shard.
    """

    def __init__(self, shard_id: int, probes_total: int, claim: str = ""):
        self.shard_id = shard_id
        self.total = probes_total
        self.claim = claim
        self.percent = 0.0
        self.found = 0
        super().__init__(self._write)

    def __call__(self, percent: float, found: int) -> None:
        self.percent, self.found = percent, found

    def _write(self) -> None:
        mine = {"claim": self.claim} if self.claim else {}
        ScanShard.objects.filter(pk=self.shard_id, state=ShardState.RUNNING, **mine).update(
            probes_done=int(self.total * min(self.percent, 100.0) / 100),
            ports_found=self.found,
            heartbeat_at=timezone.now(),
        )


class FindingStream:
    """Records open ports the moment the engine sees them and starts their fingerprints.

    nmap then overlaps the rest of the sweep instead of waiting for it (benchmark lab: a
    masscan pass followed by nmap -sV took 101 s, the streamed scan 57 s). Hosts with new
    ports are gathered for a window (stream_window: 5 s, 1 s in the sweep's last 5 s) and
    then queued together, so that one nmap run covers many hosts (fingerprint_queue): an
    nmap process per port found would cost more CPU than the sweep can spare. The shard's
    end queues whatever is left.

    With a synproxy threshold (and the engine's answers fed to answered()), a host's ports
    are held in memory until its answers show that it is not a SYN proxy
    (synproxy.stream_ready): one that answers SYN-ACK on every port must not get 65,535
    rows written one at a time, nor nmap started on its first few "open" ports. Held
    hosts are settled by the shard's end (shard_sweep).
    """

    def __init__(
        self,
        *,
        run_id: int,
        fingerprint: bool,
        threshold: synproxy.Threshold | None = None,
    ):
        self.run_id = run_id
        self.fingerprint = fingerprint
        self.threshold = threshold
        self.waiting: set[str] = set()  # hosts with ports found since the last flush
        self.window_start = 0.0
        self.open: Counter = Counter()  # open ports per host
        self.answers: Counter = Counter()  # answered probes (SYN-ACK or RST) per host
        self.held: dict[str, list[Finding]] = {}  # hosts not known to be real hosts yet
        self.ready: set[str] = set()
        self.started = time.monotonic()
        self.percent = 0.0  # the sweep's progress, from tick()

    def answered(self, answers: list[tuple[str, int]]) -> None:
        """Count the engine's answers per host (SweepEvents.answers)."""
        self.answers.update(ip for ip, _port in answers)

    def __call__(self, finding: Finding) -> None:
        if self.threshold is not None and finding.ip not in self.ready:
            self.open[finding.ip] += 1
            self.held.setdefault(finding.ip, []).append(finding)
            self.release()
            self.tick()
            return
        self.record([finding])

    def record(self, findings: list[Finding]) -> None:
        observations_record(run_id=self.run_id, findings=findings, seen_at=timezone.now())
        if not self.fingerprint:
            return
        if not self.waiting:
            self.window_start = time.monotonic()
        self.waiting.update(f.ip for f in findings)
        self.tick()

    def release(self) -> None:
        """Record the held hosts whose answers now show them to be real hosts."""
        threshold = self.threshold
        if threshold is None:
            return  # nothing is held without a threshold
        for ip in list(self.held):
            if ip in self.held and synproxy.stream_ready(
                open_count=self.open[ip], answered=self.answers[ip], threshold=threshold
            ):
                self.ready.add(ip)
                # record() ticks, and a tick releases too: this host may be gone by the time
                # the loop gets to the next one (hence the membership test above).
                self.record(self.held.pop(ip))

    def tick(self, percent: float | None = None) -> None:
        """Queue the gathered hosts once their window is over (also called on progress, with
        the sweep's percent done, so that hosts found just before a quiet stretch of the
        sweep do not wait for its end)."""
        if percent is not None:
            self.percent = percent
        if self.held and self.threshold is not None:
            self.release()
        now = time.monotonic()
        window = stream_window(now - self.started, self.percent)
        if self.waiting and now - self.window_start >= window:
            self.flush()

    def flush(self) -> None:
        """Queue the gathered hosts now (the sweep is over: no more ports to wait for)."""
        if self.waiting:
            publish.fingerprints_publish(run_id=self.run_id, ips=sorted(self.waiting))
            self.waiting.clear()


def shard_sweep_options(
    *, shard: ScanShard, guarded: GuardedTargets, engine: str, deadline: float
) -> SweepOptions:
    """The shard's sweep as every engine takes it: its targets, exclusions and ports, and
    this node's prober settings; for masscan (engine) the run's rate and PORTMON_MASSCAN_*
    too (a connect run does not depend on masscan's settings being right)."""
    udp = shard.proto == "udp"
    knobs = MasscanOptions()
    if engine == Engine.MASSCAN:
        knobs = MasscanOptions(
            rate=shard.run.rate,
            retries=(
                settings.PORTMON_MASSCAN_UDP_RETRIES if udp else settings.PORTMON_MASSCAN_RETRIES
            ),
            # masscan's UDP answers come later than a SYN-ACK (a service has to reply).
            wait=max(settings.PORTMON_MASSCAN_WAIT, 2) if udp else settings.PORTMON_MASSCAN_WAIT,
            interface=settings.PORTMON_MASSCAN_ADAPTER,
            source_ip=settings.PORTMON_MASSCAN_ADAPTER_IP,
            router_mac=settings.PORTMON_MASSCAN_ROUTER_MAC,
        )
    return SweepOptions(
        targets=guarded.networks,
        ports=tuple(parse_ports(shard.ports)),
        proto="udp" if udp else "tcp",
        exclude=guarded.exclusions,
        deadline=deadline,
        probes=udp_probes() if udp else connect_probes(),
        masscan=knobs,
    )


def shard_sweep(*, shard: ScanShard) -> list[Finding]:
    """Run the engine for one shard and return the open ports it found.

    Hosts that answer on all ports are recorded as such (one HostFinding) and left out.
    """
    from scanner import engines
    from scanner.engines import masscan

    guarded = stored_targets_guard(shard.targets)
    run = shard.run
    timeout = max(30, settings.PORTMON_SHARD_SOFT_TIME_LIMIT - 30)
    deadline = time.monotonic() + timeout
    engine = engines.choose(run.engine, list(guarded.networks))
    options = shard_sweep_options(shard=shard, guarded=guarded, engine=engine, deadline=deadline)
    if shard.proto == "udp":
        return udp_shard_sweep(shard=shard, options=options, engine=engine)
    threshold = synproxy.Threshold(
        min_ports=settings.PORTMON_SYNPROXY_MIN_PORTS,
        min_share=settings.PORTMON_SYNPROXY_MIN_SHARE,
    )
    with ShardProgress(shard.pk, shard.probes_total, shard.claim) as on_progress:
        # Ports are recorded and fingerprinted as found, whatever the engine (the callbacks
        # run outside the engines' event loops).
        stream = FindingStream(run_id=run.pk, fingerprint=run.fingerprint, threshold=threshold)

        def progress(percent: float, found: int) -> None:
            on_progress(percent, found)
            stream.tick(percent)

        if engine == Engine.MASSCAN:
            options = replace(
                options, plan=shard_routes_plan(shard=shard, targets=list(guarded.networks))
            )
            ledger = ProbeLedger((str(a) for a in guarded.addresses()), options.ports)

            def answers(batch: list[tuple[str, int]]) -> None:
                ledger.mark_many(batch)
                stream.answered(batch)

            started = time.monotonic()
            findings = masscan.sweep(
                options,
                SweepEvents(
                    progress=progress,
                    finding=stream,
                    answers=answers,
                    link_answers=stream.answered,
                ),
            )
            logger.info("shard %s: masscan took %.1fs", shard.pk, time.monotonic() - started)
            stream.flush()  # nmap starts on the last window's hosts while the re-probe runs
            findings += gaps_reprobe(shard=shard, ledger=ledger, options=options, stream=stream)
        else:
            # Loopback, IPv6, no raw sockets: the connect scanner.
            findings = engines.sweep_engine(engine, "tcp").sweep(
                options, SweepEvents(progress=progress, finding=stream, answers=stream.answered)
            )
            stream.flush()
    probed = count_ports(options.ports)
    split = synproxy.split(findings, probed=probed, threshold=threshold)
    if split.answering_all:
        host_answering_all_record(
            run_id=run.pk, answering_all=split.answering_all, probed=probed, at=timezone.now()
        )
        logger.warning(
            "shard %s: %d host(s) answer on all ports, not listed port by port: %s",
            shard.pk,
            len(split.answering_all),
            ", ".join(sorted(split.answering_all)[:20]),
        )
    return split.kept


def udp_shard_sweep(*, shard: ScanShard, options: SweepOptions, engine: str) -> list[Finding]:
    """Probe one UDP shard; return the ports that answered (open), never the silent ones.

    Routed targets: masscan's UDP sweep (its protocol requests and ours) gives candidates,
    and each is confirmed by a reply to our own request (udp.verify), or failing that by
    nmap -sU -sV calling it open; on-link, loopback and IPv6 targets, or no raw sockets:
    the UDP prober itself (a reply is open, ICMP port unreachable closed, silence
    open|filtered). masscan lists ports that sent nothing a monitor can call open (masscan
    #182, #357): a candidate nobody confirms is dropped.
    """
    from scanner import engines
    from scanner.engines import masscan

    with ShardProgress(shard.pk, shard.probes_total, shard.claim) as on_progress:
        if engine != Engine.MASSCAN:
            prober = engines.sweep_engine(engine, "udp")
            return prober.sweep(options, SweepEvents(progress=on_progress))
        options = replace(
            options, plan=shard_routes_plan(shard=shard, targets=list(options.targets))
        )
        candidates = masscan.sweep(
            options,
            SweepEvents(progress=lambda percent, found: on_progress(percent * 0.9, found)),
        )
    return udp_candidates_confirm(shard_id=shard.pk, candidates=candidates, options=options)


def udp_candidates_confirm(
    *, shard_id: int, candidates: list[Finding], options: SweepOptions
) -> list[Finding]:
    """The UDP candidates that answer our request, or that nmap -sU -sV finds open."""
    from scanner.engines import nmap, udp

    results = udp.verify(candidates, options.prober, deadline=options.deadline)
    confirmed = [Finding(ip=r.ip, port=r.port, proto="udp") for r in results if r.state == "open"]
    # Not confirmed by our request: nmap's -sV sends many more; open only if one answers.
    doubtful: dict[str, list[int]] = {}
    for r in results:
        if r.state == udp.OPEN_FILTERED:
            doubtful.setdefault(r.ip, []).append(r.port)
    if doubtful and nmap.available():
        named = nmap.fingerprint_many(
            hosts=doubtful,
            options=nmap.FingerprintOptions(
                timeout=settings.PORTMON_NMAP_PORT_TIMEOUT,
                proto="udp",
                intensity=nmap.UDP_VERSION_INTENSITY,
            ),
        )
        confirmed += [f for result in named.values() for f in result.findings]
    dropped = len(candidates) - len(confirmed)
    logger.info(
        "shard %s: %d UDP candidate(s), %d confirmed open, %d dropped (no answer: not open)",
        shard_id,
        len(candidates),
        len(confirmed),
        dropped,
    )
    return confirmed


def shard_routes_plan(*, shard: ScanShard, targets: list) -> "routes.SweepPlan":
    """The shard's masscan route plan, checked against its first attempt's.

    Raises RouteChanged when the way out moved since then: probes that left by eth1 and then
    by eth2 would make one shard of two networks' answers (and a retry must not quietly
    sweep by another interface than the one the first attempt was allowed to use).
    """
    sweep_plan = routes.plan(
        targets,
        interface=settings.PORTMON_MASSCAN_ADAPTER,
        source_ip=settings.PORTMON_MASSCAN_ADAPTER_IP,
        router_mac=settings.PORTMON_MASSCAN_ROUTER_MAC,
    )
    change = shard_route_plan_check(shard_id=shard.pk, plan=routes.plan_json(sweep_plan))
    if change:
        raise routes.RouteChanged(change)
    return sweep_plan


def gaps_reprobe(
    *,
    shard: ScanShard,
    ledger: ProbeLedger,
    options: SweepOptions,
    stream: FindingStream,
) -> list[Finding]:
    """Probe again what the sweep got no answer for: exact ports, or whole filtering hosts.

    A port the re-probe finds goes to nmap at once (the sweep is over: no window is worth
    waiting for, and waiting for the re-probe's end would make its nmap run the run's tail).
    """
    from scanner.engines import connect, masscan

    started = time.monotonic()
    deadline = options.deadline if options.deadline is not None else started + 60
    plan = reprobe_plan(ledger)
    found: list[Finding] = []
    if plan.exact:
        # Full TCP connects with retries: a lost SYN or SYN-ACK is sent again.
        candidates = [Finding(ip=ip, port=port) for ip, port in plan.exact]

        def confirmed(finding: Finding) -> None:
            stream(finding)
            stream.flush()

        found += connect.verify(
            candidates,
            replace(options.prober, retries=2),
            deadline=deadline,
            on_confirmed=confirmed,
        )
    if plan.rescan:
        # Hosts that drop many probes (a firewall): a second masscan pass, with retries,
        # over its own route plan.
        again = replace(
            options,
            targets=tuple(ipaddress.ip_address(ip) for ip in plan.rescan),
            masscan=replace(options.masscan, retries=1),
            deadline=max(deadline, time.monotonic() + 1.0),
            plan=None,
        )
        found += masscan.sweep(again, SweepEvents(finding=stream, link_answers=stream.answered))
    logger.info(
        "shard %s: %d probe(s) unanswered on %d host(s) re-probed (%d open), %d filtering "
        "host(s) swept again, %d silent host(s), in %.1fs",
        shard.pk,
        len(plan.exact),
        len({ip for ip, _ in plan.exact}),
        len(found),
        len(plan.rescan),
        len(plan.silent),
        time.monotonic() - started,
    )
    return found
