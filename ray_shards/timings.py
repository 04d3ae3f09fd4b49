"""Timing knobs shared by the Orchestrator and its hosts."""

from __future__ import annotations

import dataclasses

from ray_shards.identify import GRANT_USE_LIMIT, WINDOW_FROM_MODES, WindowFrom

__all__ = ["Timings"]


@dataclasses.dataclass(frozen=True, slots=True)
class Timings:
    """How fast ray_shards notices and reacts; the defaults suit a production bot.

    Attributes
    ----------
    sync_interval
        Longest time between two syncs of a host with the Orchestrator while any of its
        shards is not READY or changed state since its last sync (a sync is a long poll
        that returns at once when there is work for the host).
    steady_sync_interval
        The same once every shard of the host is READY and none changed since its last
        sync: a steady host reports its seqs and renews its leases this often. Work for the
        host (adopts, revokes, commands, stop) still wakes its sync at once. Each sync
        costs the Orchestrator about a millisecond of Ray call handling, so at 16k shards
        (128 hosts) 0.5 s alone would be a quarter of a core (BENCHMARKS.md, F2). The price:
        a change on a steady host (a shard reconnecting) reaches the table up to this much
        later, and a failover RESUMEs up to this much further back (events replayed).
        A big bot's hosts park longer than this (`steady_sync_rate`).
    steady_sync_rate
        Most steady syncs per second the Orchestrator asks of all its hosts together, or None for no
        limit. Past ``steady_sync_rate * steady_sync_interval`` live hosts (80 at the defaults: 10,240
        shards at 128 per host) a steady host parks ``hosts / steady_sync_rate`` seconds instead (3.2 s
        at 16,384 shards on 128 hosts), at most ``host_timeout / 4`` (``standalone_lease_ttl / 4`` for a
        standalone `Bot`), so the Orchestrator's cost of steady syncs stops growing with the bot (about
        4 ms of actor CPU each at 16k shards, mostly Ray's own per-call work: BENCHMARKS.md, F2). The
        Orchestrator says the park in each sync's answer (`HostDirectives.steady_interval`), shortened by
        up to a tenth at random so hosts that synced together drift apart. The price is the one of
        `steady_sync_interval`, for big bots only: a failover RESUMEs up to the park further back.
    host_timeout
        A host actor that has not synced for this long is presumed hung and is killed
        (fenced) so its shards can move.
    standalone_lease_ttl
        A standalone `Bot` (not a Ray actor, so it cannot be killed) loses its leases
        after this long without a sync; it stops its own shards earlier.
    death_quarantine
        Pause between learning that a host died and handing its shards on, so Discord
        has seen the dead process's sockets close.
    recovery_grace
        After an Orchestrator restart, hosts from the checkpoint have this long to come
        back before their shards are given to others.
    identify_window
        Discord's identify window per bucket (5 s).
    identify_margin
        Safety added to every identify window.
    grant_timeout
        An identify grant never released (no READY, no failure) is spent after this long.
    seq_report_lag
        Unused since hosts report a listener-completion watermark (kept so old configs load).
    max_listener_lag
        Seconds one event's listeners may hold the reported seq back. Past it the event is
        given up on (logged, counted) so the RESUME point stays within Discord's replay window.
    drain_timeout
        On a hand-over (rebalance, rolling restart, reshard, stop), how long a host waits for the
        listeners of the events it already took before it hands the session on.
    checkpoint_interval
        Most time between a change of a lease, an owner, a status or a session (id or resume URL) and the
        checkpoint that holds it.
    checkpoint_batch_interval
        Most time between a seq advance (or a counter change) and the checkpoint that holds it. Seqs may
        lag in the checkpoint: a restarted Orchestrator hands a shard whose host died meanwhile on at the
        older seq, and its RESUME is replayed the events since (at-least-once, never a seq Discord has not
        sent). Keep it well inside Discord's replay window.
    command_timeout
        How long a client command waits for the owning host.
    auto_reshard_interval
        With automatic resharding on, how often the policy asks Discord for its recommended shard count.
    host_start_timeout
        A new host actor that makes no progress for this long while it starts is given up (killed); a rolling
        restart then fails and rolls back instead of hanging when the cluster has no room. Progress is the host
        registering, or then the bot's count of READY shards reaching a new high: a big bot's boot waits minutes
        in Discord's identify queue (2,048 shards at ``max_concurrency`` 16: about ten), and that is not a stuck
        host.
    capability_idle_ttl
        A capability unused for this long is forgotten (its holder authenticates again by itself).
    max_capabilities
        At most this many capabilities are remembered; the least recently used go first.
    health_timeout
        How long the Orchestrator waits for a silent host's health check (answered on the host's own health
        event loop, not the shard loop) before it fences the host.
    host_switch_interval
        ``sys.setswitchinterval`` in every `ShardHost` process (Python's default is 0.005 s), or None to
        leave it. A host's shard loop is the only Python thread there doing real work, but Ray's main
        thread asks for the GIL every 10 ms (its signal check). CPython restarts a waiter's timed wait
        at every release of the GIL, and the loop releases it at each socket read, so with a long
        interval the main thread waits through a whole burst, and every release pays for waking it.
        A short interval lets it time out, take the GIL for a few microseconds and go back to sleep:
        10 us measured 0.92 of plain hikari's events/s against 0.80-0.85 at 0.05 s and 0.005 s
        (BENCHMARKS.md, F3). The price is paid only while two Python threads of the host both want the
        CPU: they hand over every 10 us, which cost about 14 % here for two busy threads (a CPU-bound
        thread of your own beside the shards; set 0.005 then). The health check (its own thread) gets
        the GIL within this interval.
    host_main_thread_timer_slack_ns
        Linux timer slack, in ns, of Ray's main thread in every `ShardHost` process (and of the threads
        it starts afterwards, the shard loop's among them), or None to leave it (50 us, Linux's
        default). Linux stretches each timed sleep of a thread by its slack, so the main thread's 10 us
        GIL waits (above) lasted about 60 us, and every release of the GIL by the shard loop in between
        woke it for nothing. 1 ns took the host's context switches from about 185 to 45 per 1,000
        events and its events/s from 0.88-0.89 to 0.91-0.99 of plain hikari's (BENCHMARKS.md, "The host
        main thread's timer slack"). Set by Ray's worker setup hook, which runs on that thread
        (`ray_shards.main_thread`); a setup hook of your job's still runs, after it. Ignored off Linux.
        The price: a host's runtime_env then differs from the job's, so its worker cannot come from
        Ray's pool of idle workers. A host started in about 0.9 s here instead of 0.3 s: once per host
        at boot, per replacement and per rolling-restart step. Failover moves shards to live hosts and
        is not delayed.
    host_gc_threshold
        The garbage collector's youngest-generation threshold (``gc.set_threshold``'s first value; Python's
        default is 700) in every `ShardHost` process, or None to leave it. Each event allocates a few hundred
        tracked objects (its payload, entities, listener task), and refcounting frees nearly all of them;
        the collections only look for cycles. At 700 one ran every few events and walked what was still in
        flight (queued frames, running listeners), promoting it into older generations that are walked again.
        7000 took a host's event loop from 55.6-56.2 to 53.5-54.5 us per event (BENCHMARKS.md, "Events/s into
        one listener"). The price: cyclic garbage lives up to ten times as many allocations longer, and one
        young collection walks up to 7000 objects (well under a millisecond) instead of 700. The older
        generations' thresholds are left as they are.
    host_memory_trim_interval
        Seconds between two ``malloc_trim(0)`` calls in every `ShardHost` process (glibc only; None: never).
        A host's boot (GUILD_CREATE payloads, zlib buffers) and Ray's own threads free far more than they
        keep, and glibc holds freed pages in its arenas for good: right after a trim a host's USS was about
        25 KiB per shard lower, 6-8 KiB per shard a few seconds later (BENCHMARKS.md, F4). The call runs in
        a worker thread, off the shard loop.
    reshard_buffer_cap
        Events a host of a reshard's new set may hold before the switch. Over it the reshard fails
        (the old shards keep running, nothing is lost) instead of holding without bound.
    reshard_max_skew
        Seconds by which the two sets of a reshard may receive one event apart (see `ray_shards.cutover`);
        the Orchestrator also waits this long after the new set is READY before it switches.
    identify_lead
        How long before its bucket opens a host's shard may be granted its IDENTIFY, with a
        not-before wait it sleeps locally (`ray_shards.identify`, "Grants ahead of the opening"):
        the ask's round trip then leaves the time between two IDENTIFYs of a bucket. 0 grants
        only once the bucket is open. At most ``grant_timeout - 1`` (a host sends within 1 s of
        the not-before time); an Orchestrator restart waits this much longer before its first grants.
    identify_window_from
        What a bucket's next window is counted from (`ray_shards.identify`, "Where a window starts").
        ``"ready"`` (the default): READY's arrival at the Orchestrator, the only moment known to come
        after Discord received the IDENTIFY, whatever the network and Discord's own delays; each
        round of a boot then also pays READY's latency (BENCHMARKS.md, F7: about 1.08 x Discord's
        floor in the simulator). ``"sent"``: the moment the IDENTIFY frame was written to its socket,
        which the host reports as an age on its own monotonic clock with READY; a boot then runs
        within ``identify_margin`` and a round trip per round of the floor. It assumes that two
        IDENTIFYs of a bucket reach Discord's rate limiter with one-way delays that differ by less
        than ``identify_margin``; when they do not, Discord answers the later one with op 9 and
        the shard identifies again through the queue (one more session start from the daily budget).
        (``@discordjs/ws`` counts 5 s from each permit, before the frame is even sent, and does not
        wait for READY.) The bucket is still held until READY (or failure) either way.
    """

    sync_interval: float = 0.5
    steady_sync_interval: float = 2.0
    steady_sync_rate: float | None = 40.0
    host_timeout: float = 30.0
    standalone_lease_ttl: float = 10.0
    death_quarantine: float = 0.3
    recovery_grace: float = 5.0
    identify_window: float = 5.0
    identify_margin: float = 0.1
    grant_timeout: float = 30.0
    seq_report_lag: float = 1.0
    max_listener_lag: float = 60.0
    drain_timeout: float = 10.0
    checkpoint_interval: float = 1.0
    checkpoint_batch_interval: float = 10.0
    command_timeout: float = 15.0
    auto_reshard_interval: float = 600.0
    host_start_timeout: float = 120.0
    capability_idle_ttl: float = 3600.0
    max_capabilities: int = 4096
    health_timeout: float = 10.0
    host_switch_interval: float | None = 1e-05
    host_main_thread_timer_slack_ns: int | None = 1
    host_gc_threshold: int | None = 7000
    host_memory_trim_interval: float | None = 30.0
    reshard_buffer_cap: int = 100_000
    reshard_max_skew: float = 1.0
    identify_lead: float = 0.5
    identify_window_from: WindowFrom = "ready"

    @property
    def longest_sync_interval(self) -> float:
        """The longest a live host of a bot with few hosts waits between two syncs (`longest_sync_interval_at`)."""
        return max(self.sync_interval, self.steady_sync_interval)

    def steady_park(self, hosts: int, *, standalone: bool = False, jitter: float = 0.0) -> float:
        """How long a steady host's sync parks while the bot has ``hosts`` live hosts (`steady_sync_rate`).

        ``jitter`` in [0, 1) shortens the park by up to a tenth of it, only when the rate limit set it (a
        small bot keeps `steady_sync_interval` exactly); the caller draws it at random.
        """
        park = self.steady_sync_interval
        if self.steady_sync_rate is None or hosts <= self.steady_sync_rate * park:
            return park
        cap = (self.standalone_lease_ttl if standalone else self.host_timeout) / 4
        # Never below steady_sync_interval, even under the cap: an operator who set a longer interval meant it.
        return max(park, min(hosts / self.steady_sync_rate, cap) * (1.0 - 0.1 * jitter))

    def longest_sync_interval_at(self, hosts: int) -> float:
        """The longest a live host waits between two syncs while the bot has ``hosts`` live hosts."""
        return max(self.sync_interval, self.steady_park(hosts))

    def __post_init__(self) -> None:
        if self.steady_sync_rate is not None and not self.steady_sync_rate > 0:
            msg = f"steady_sync_rate must be positive syncs per second or None, not {self.steady_sync_rate!r}"
            raise ValueError(msg)
        if self.host_switch_interval is not None and not 0 < self.host_switch_interval <= 1.0:
            msg = f"host_switch_interval must be in (0, 1] seconds or None, not {self.host_switch_interval!r}"
            raise ValueError(msg)
        if not 0 <= self.identify_lead <= self.grant_timeout - GRANT_USE_LIMIT:
            # The Orchestrator counts a grant's IDENTIFY as sent by its opening plus the grant-use limit hosts
            # keep, and a grant must be spent within grant_timeout.
            msg = (
                f"identify_lead must be in [0, grant_timeout - {GRANT_USE_LIMIT:g}] seconds, "
                f"not {self.identify_lead!r}"
            )
            raise ValueError(msg)
        if self.identify_window_from not in WINDOW_FROM_MODES:
            modes = " or ".join(repr(mode) for mode in WINDOW_FROM_MODES)
            msg = f"identify_window_from must be {modes}, not {self.identify_window_from!r}"
            raise ValueError(msg)
        # 0 would mean "back to the thread's default" to Linux: say None for that.
        _check_whole_or_none("host_main_thread_timer_slack_ns", self.host_main_thread_timer_slack_ns, "ns")
        # 0 would disable the collector altogether, which leaks every cycle: not a tuning.
        _check_whole_or_none("host_gc_threshold", self.host_gc_threshold, "allocations")
        if self.host_memory_trim_interval is not None and not self.host_memory_trim_interval > 0:
            msg = f"host_memory_trim_interval must be positive seconds or None, not {self.host_memory_trim_interval!r}"
            raise ValueError(msg)


def _check_whole_or_none(name: str, value: object, unit: str) -> None:
    """Refuse anything but None or a whole number >= 1 (bools too: ``True`` is an int to Python)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        msg = f"{name} must be a whole number of {unit} >= 1 or None, not {value!r}"
        raise ValueError(msg)
