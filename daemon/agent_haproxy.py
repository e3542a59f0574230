"""``bae agent haproxy``: apply the daemon's deltas to HAProxy through its runtime API.

The agent follows the daemon with ``DeltaSubscriber`` (Clone pattern) and drives one HAProxy
backend per service over the admin stats socket (docs/agent.md):

- **Pool.** A backend declares a pool of servers in haproxy.cfg. Desired replicas N: the
  first N servers in declared order are ready, the others drain and then go to
  maintenance. More than the pool: every server is ready and the shortfall is counted
  (``capped``).
- **Weights.** A server that leaves maintenance starts at ``ramp_start`` of its configured
  weight and rises linearly to it over ``ramp_s`` (slow start for cold replicas).
- **maxconn.** The TIER records of a service add up to the connections the service may
  hold; each pool server gets ``ceil(sum / N)``.
- **Pre-warm.** A PREWARM record raises the ready count to its ``replicas`` from
  ``prewarm_lead_s`` before ``at_us`` until ``prewarm_hold_s`` after it.
- **Reconcile.** After every snapshot, when the socket is reachable again, and every
  ``reconcile_s``, the agent reads ``show servers state`` / ``show stat`` and re-applies
  what differs. HAProxy gone or refusing a command is logged and counted, retried with
  back-off, and never stops the agent; the last desired state is kept.
- **Advisory.** ALLOCATIONs flagged ADVISORY (daemon in shadow mode) are logged with the
  commands the agent would send, never applied.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import signal
import socket
import threading
import time
from dataclasses import dataclass, field

from bae_core import config as bae_config
from bae_core.errors import ConfigError, HAProxyError, HAProxyRefused, HAProxyUnreachable

from .client import DeltaState, DeltaSubscriber

log = logging.getLogger("bae.agent")

# srv_admin_state bits (HAProxy include/haproxy/server-t.h)
ADMF_FMAINT, ADMF_IMAINT, ADMF_CMAINT = 0x01, 0x02, 0x04
ADMF_FDRAIN, ADMF_IDRAIN, ADMF_RMAINT = 0x08, 0x10, 0x20
MAINT_MASK = ADMF_FMAINT | ADMF_IMAINT | ADMF_RMAINT  # HAProxy's SRV_ADMF_MAINT
DRAIN_MASK = ADMF_FDRAIN | ADMF_IDRAIN
OP_RUNNING = 2  # srv_op_state

# what HAProxy accepts as a proxy or server name; anything else is never sent to the socket
NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@dataclass(frozen=True)
class Server:
    """One line of ``show servers state BACKEND``."""

    backend: str
    name: str
    op_state: int
    admin_state: int
    uweight: int
    iweight: int

    @property
    def maint(self) -> bool:
        return bool(self.admin_state & MAINT_MASK)

    @property
    def drain(self) -> bool:
        return not self.maint and bool(self.admin_state & DRAIN_MASK)

    @property
    def ready(self) -> bool:
        return not self.admin_state & (MAINT_MASK | DRAIN_MASK)

    @property
    def up(self) -> bool:
        return self.ready and self.op_state == OP_RUNNING


class RuntimeAPI:
    """HAProxy's runtime API over its UNIX stats socket, one command per connection.

    Read commands return parsed rows; ``set_*`` commands raise ``HAProxyRefused`` when
    HAProxy answers with anything but an empty line (its way of saying "done").
    """

    def __init__(self, path: str, timeout_s: float = 2.0):
        self.path, self.timeout_s = path, timeout_s
        self.commands = 0

    def command(self, cmd: str) -> str:
        if "\n" in cmd or ";" in cmd:
            raise ValueError(f"one command at a time, got {cmd!r}")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout_s)
        try:
            s.connect(self.path)
            s.sendall(cmd.encode() + b"\n")
            chunks = []
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        except OSError as e:
            raise HAProxyUnreachable(self.path, e.strerror or type(e).__name__) from e
        finally:
            s.close()
        self.commands += 1
        return b"".join(chunks).decode("utf-8", "replace")

    def _set(self, cmd: str) -> None:
        out = self.command(cmd).strip()
        if out:
            raise HAProxyRefused(cmd, out.splitlines()[0])

    def set_state(self, backend: str, server: str, state: str) -> None:
        if state not in ("ready", "drain", "maint"):
            raise ValueError(state)
        self._set(f"set server {backend}/{server} state {state}")

    def set_weight(self, backend: str, server: str, weight: int) -> None:
        self._set(f"set server {backend}/{server} weight {int(weight)}")

    def set_maxconn(self, backend: str, server: str, maxconn: int) -> None:
        self._set(f"set maxconn server {backend}/{server} {int(maxconn)}")

    def servers_state(self, backend: str) -> list[Server]:
        """The backend's servers in declared order."""
        cmd = f"show servers state {backend}"
        out = self.command(cmd)
        lines = [ln for ln in out.splitlines() if ln.strip()]
        if len(lines) < 2 or not lines[0].strip().isdigit() or not lines[1].startswith("#"):
            raise HAProxyRefused(cmd, lines[0] if lines else "empty answer")
        cols = lines[1][1:].split()
        idx = {c: i for i, c in enumerate(cols)}
        out_rows = []
        try:
            for ln in lines[2:]:
                f = ln.split()
                if len(f) < len(cols) or f[idx["be_name"]] != backend:
                    continue
                out_rows.append(Server(
                    backend, f[idx["srv_name"]], int(f[idx["srv_op_state"]]),
                    int(f[idx["srv_admin_state"]]), int(f[idx["srv_uweight"]]),
                    int(f[idx["srv_iweight"]])))
        except (KeyError, ValueError) as e:
            raise HAProxyRefused(cmd, f"unexpected answer format ({e!r})") from e
        return out_rows

    def stat(self, backend: str) -> dict[str, dict[str, str]]:
        """``show stat`` rows of the backend's servers, by server name (CSV columns)."""
        cmd = f"show stat {backend} 4 -1"
        out = self.command(cmd)
        lines = [ln for ln in out.splitlines() if ln.strip()]
        if not lines or not lines[0].startswith("# pxname"):
            raise HAProxyRefused(cmd, lines[0] if lines else "empty answer")
        cols = lines[0][2:].split(",")
        rows = {}
        for ln in lines[1:]:
            row = dict(zip(cols, ln.split(",")))
            if row.get("pxname") == backend and row.get("svname") not in ("BACKEND",
                                                                         "FRONTEND"):
                rows[row["svname"]] = row
        return rows


@dataclass
class AgentOptions:
    mapping: dict[str, str] = field(default_factory=dict)  # service name or id -> backend
    only_mapped: bool = False  # manage only services named in mapping
    reconcile_s: float = 5.0  # read HAProxy and re-apply at least this often
    step_s: float = 0.5  # re-check this often while ramps, drains or pre-warms run
    ramp_s: float = 30.0  # a server leaving maintenance reaches full weight after this
    ramp_start: float = 0.1  # ... starting at this fraction of its configured weight
    drain_s: float = 10.0  # drain this long before maintenance (0: maintenance at once)
    prewarm_lead_s: float = 30.0  # PREWARM: ready this long before at_us ...
    prewarm_hold_s: float = 60.0  # ... and until this long after it
    prewarm_min_confidence: float = 0.0
    min_ready: int = 1  # never fewer ready servers than this in a managed backend
    backoff_s: float = 0.5  # first retry after an error; doubles up to backoff_max_s
    backoff_max_s: float = 30.0


@dataclass
class Target:
    """What the daemon wants for one backend, from the latest records of its service."""

    backend: str
    service: int
    name: str
    replicas: int | None = None  # ALLOCATION.desired_replicas
    prewarm_at_s: float | None = None
    prewarm_replicas: int = 0
    prewarm_confidence: float = 0.0
    maxconn: int | None = None  # sum of the service's TIER maxconn

    def wanted(self, now_wall: float, o: AgentOptions) -> tuple[int | None, bool]:
        """(ready servers wanted now or None to leave the pool alone, pre-warm active)."""
        want = self.replicas
        active = False
        if (self.prewarm_at_s is not None and self.prewarm_confidence >= o.prewarm_min_confidence
                and self.prewarm_at_s - o.prewarm_lead_s <= now_wall
                < self.prewarm_at_s + o.prewarm_hold_s):
            active = self.prewarm_replicas > (want or 0)
            want = max(want or 0, self.prewarm_replicas)
        return want, active

    def boundaries(self, o: AgentOptions) -> tuple[float, ...]:
        if self.prewarm_at_s is None:
            return ()
        return (self.prewarm_at_s - o.prewarm_lead_s, self.prewarm_at_s + o.prewarm_hold_s)


class HAProxyAgent:
    """Keeps HAProxy's backends where the daemon's deltas say. One thread calls ``step``
    (or ``run``); ``stats`` may be read from any thread (a lock serialises the two)."""

    def __init__(self, api: RuntimeAPI, options: AgentOptions | None = None, *,
                 clock=time.monotonic, wallclock=time.time):
        self.api = api
        self.o = options or AgentOptions()
        self._mono, self._wall = clock, wallclock
        self.targets: dict[str, Target] = {}
        self._due: dict[str, float] = {}
        self._fails: dict[str, int] = {}
        self._last_refusal: dict[str, str] = {}
        self._ramp: dict[tuple[str, str], float] = {}  # (backend, server) -> ramp start
        self._drain: dict[tuple[str, str], float] = {}  # (backend, server) -> drain start
        self._view: dict[str, dict] = {}
        self._advised: dict[str, tuple] = {}
        self._warned: set = set()
        self.up: bool | None = None  # None until the first contact
        self._down_until = 0.0
        self._down_fails = 0
        self.last_error: str | None = None
        self.counters = dict.fromkeys(
            ("converges", "reconciles", "reconnects", "set_ready", "set_drain", "set_maint",
             "set_weight", "set_maxconn", "capped", "advisory_decisions"), 0)
        self.skipped: set[int] = set()  # services without a usable backend name
        self.errors = {"unreachable": 0, "refused": 0}
        self.subscriber: DeltaSubscriber | None = None
        self._lock = threading.RLock()

    # ---- desired state ------------------------------------------------------------------
    def backend_for(self, service: int, names: dict[int, str]) -> str | None:
        name = names.get(service)
        m = self.o.mapping
        backend = m.get(str(service)) or (m.get(name) if name is not None else None)
        if backend is None and not self.o.only_mapped:
            backend = name
        if backend is None:
            return None
        if not NAME_RE.match(backend):
            self._warn_once(("bad_name", backend), "service maps to a name HAProxy cannot "
                            "have; map it with --map SERVICE=BACKEND", service=service,
                            backend=backend)
            return None
        return backend

    def update_targets(self, state: DeltaState) -> None:
        """Take the desired state from the daemon's records. Services absent from ``state``
        keep their last target (a restarted daemon without history does not empty pools)."""
        services = set(state.allocations) | set(state.prewarm) | {s for s, _ in state.tiers}
        for sid in sorted(services):
            backend = self.backend_for(sid, state.names)
            if backend is None:
                if sid not in self.skipped:
                    self.skipped.add(sid)
                    log.info("service not managed: no name, no --map entry, or not mapped "
                             "with --only-mapped", extra={"event": "skipped", "service": sid})
                continue
            self.skipped.discard(sid)
            t = Target(backend, sid, state.names.get(sid, str(sid)))
            a = state.allocations.get(sid)
            if a is not None:
                t.replicas = int(a["desired_replicas"])
            p = state.prewarm.get(sid)
            if p is not None:
                t.prewarm_at_s = int(p["at_us"]) / 1e6
                t.prewarm_replicas = int(p["replicas"])
                t.prewarm_confidence = float(p["confidence"])
            tiers = [r for (s, _), r in state.tiers.items() if s == sid]
            if tiers:
                t.maxconn = sum(int(r["maxconn"]) for r in tiers)
            old = self.targets.get(backend)
            if old is not None and old.service != sid:
                self._warn_once(("shared", backend, sid), "two services map to one backend; "
                                "the later one wins: fix --map", backend=backend,
                                services=[old.service, sid])
            if old != t:
                self.targets[backend] = t
                self._due[backend] = 0.0

    # ---- the loop -----------------------------------------------------------------------
    def step(self, state: DeltaState | None = None, *, changed: bool = False,
             full: bool = False) -> None:
        """One turn: take ``state`` when ``changed``, then converge every backend that is
        due (all of them when ``full``: after a snapshot)."""
        with self._lock:
            self._step(state, changed, full)

    def _step(self, state: DeltaState | None, changed: bool, full: bool) -> None:
        now = self._mono()
        if changed and state is not None:
            self.update_targets(state)
        if full:
            self.counters["reconciles"] += 1
            self._due = dict.fromkeys(self.targets, 0.0)
        if state is not None and state.advisory:
            self._advise(now)
            return
        if self.up is False and now < self._down_until:
            return
        for backend in list(self.targets):
            if self._due.get(backend, 0.0) > now:
                continue
            try:
                self._due[backend] = self.converge(backend, now)
                self._fails.pop(backend, None)
                self._last_refusal.pop(backend, None)
            except HAProxyUnreachable as e:
                self._gone(e, now)
                return
            except HAProxyRefused as e:
                self._refused(backend, e, now)
            if self.up is not True:
                self._back(now)

    def run(self, sub: DeltaSubscriber, stop: threading.Event, poll_s: float = 0.1,
            stats_every_s: float = 60.0) -> None:
        """Follow ``sub`` and apply until ``stop`` is set; never raises for HAProxy errors."""
        self.subscriber = sub
        resyncs = sub.resyncs
        next_stats = self._mono() + stats_every_s
        while not stop.is_set():
            applied = sub.poll(poll_s)
            full = sub.resyncs != resyncs
            resyncs = sub.resyncs
            self.step(sub.state, changed=bool(applied) or full, full=full)
            if self._mono() >= next_stats:
                next_stats += stats_every_s
                log.info("agent stats", extra={"event": "stats", "stats": self.stats()})

    # ---- converging one backend ---------------------------------------------------------
    def plan(self, backend: str, now: float) -> tuple[list[tuple], float, dict]:
        """Read the backend and work out the commands that bring it to its target.

        Returns (actions, when the backend is next due, a summary). An action is
        (kind, server, value) with kind ready/drain/maint/weight/maxconn."""
        t, o = self.targets[backend], self.o
        wall = self._wall()
        servers = self.api.servers_state(backend)
        if not servers:
            raise HAProxyRefused(f"show servers state {backend}", "the backend has no servers")
        want, prewarming = t.wanted(wall, o)
        n = None
        capped = False
        if want is not None:
            need = max(want, o.min_ready)
            n = min(need, len(servers))
            capped = need > len(servers)
        actions: list[tuple] = []
        next_due = now + o.reconcile_s
        for i, srv in enumerate(servers):
            key = (backend, srv.name)
            if n is None:
                break
            if i < n:
                if srv.maint:  # cold: come up at the ramp's first weight
                    w0 = self._ramp_weight(srv, now, now)
                    if w0 != srv.uweight:
                        actions.append(("weight", srv.name, w0))
                    actions.append(("ready", srv.name, "cold"))
                    if w0 != srv.iweight:
                        next_due = min(next_due, now + o.step_s)
                    continue
                if srv.drain:  # still warm: back to ready at its weight
                    actions.append(("ready", srv.name, "warm"))
                start = self._ramp.get(key)
                if start is None and srv.uweight < srv.iweight and not srv.drain:
                    start = self._resume_ramp(srv, now)
                w = self._ramp_weight(srv, start, now)
                if w != srv.uweight:
                    actions.append(("weight", srv.name, w))
                if start is not None and w < srv.iweight:
                    next_due = min(next_due, now + o.step_s)
            else:
                if srv.ready:
                    actions.append(("drain" if o.drain_s > 0 else "maint", srv.name, None))
                    if o.drain_s > 0:
                        next_due = min(next_due, now + o.drain_s)
                elif srv.drain:
                    since = self._drain.setdefault(key, now)
                    if now - since >= o.drain_s:
                        actions.append(("maint", srv.name, None))
                    else:
                        next_due = min(next_due, since + o.drain_s)
        per_server = None
        if t.maxconn is not None and n:
            per_server = max(1, math.ceil(t.maxconn / n))
            stat = self.api.stat(backend)
            for srv in servers:
                cur = stat.get(srv.name, {}).get("slim", "")
                if cur != str(per_server):
                    actions.append(("maxconn", srv.name, per_server))
        for b in t.boundaries(o):
            if b > wall:
                next_due = min(next_due, now + (b - wall))
        summary = {"service": t.name, "desired": t.replicas, "wanted": want, "ready": n,
                   "pool": len(servers), "capped": capped, "prewarm": prewarming,
                   "maxconn_per_server": per_server}
        return actions, next_due, summary

    def converge(self, backend: str, now: float) -> float:
        """Apply the plan of one backend; returns when it is next due. Raises
        ``HAProxyUnreachable`` at once; a refused command is raised after the others ran."""
        actions, next_due, summary = self.plan(backend, now)
        self.counters["converges"] += 1
        refused = None
        for kind, server, value in actions:
            try:
                self._do(backend, kind, server, value, now)
            except HAProxyRefused as e:
                refused = refused or e
        prev = self._view.get(backend)
        if summary["capped"] and not (prev and prev["capped"] and
                                      prev["wanted"] == summary["wanted"]):
            self.counters["capped"] += 1
            log.warning("desired replicas exceed the backend's pool: all servers ready",
                        extra={"event": "capped", "backend": backend, **summary})
        if actions:  # a ramp's weight steps at debug level, everything else at info
            level = logging.DEBUG if all(k == "weight" for k, _, _ in actions) else logging.INFO
            log.log(level, "applied", extra={
                "event": "applied", "backend": backend,
                "actions": [f"{k} {s}" + ("" if v is None else f" {v}") for k, s, v in actions],
                **summary})
        self._view[backend] = summary
        if refused is not None:
            raise refused
        return next_due

    def _do(self, backend: str, kind: str, server: str, value, now: float) -> None:
        key = (backend, server)
        api = self.api
        if kind == "weight":
            api.set_weight(backend, server, value)
            self.counters["set_weight"] += 1
        elif kind == "maxconn":
            api.set_maxconn(backend, server, value)
            self.counters["set_maxconn"] += 1
        elif kind == "ready":
            api.set_state(backend, server, "ready")
            self.counters["set_ready"] += 1
            self._drain.pop(key, None)
            if value == "cold" and self.o.ramp_s > 0:
                self._ramp[key] = now
        elif kind == "drain":
            api.set_state(backend, server, "drain")
            self.counters["set_drain"] += 1
            self._drain[key] = now
            self._ramp.pop(key, None)
        elif kind == "maint":
            api.set_state(backend, server, "maint")
            self.counters["set_maint"] += 1
            self._drain.pop(key, None)
            self._ramp.pop(key, None)

    def _ramp_weight(self, srv: Server, start: float | None, now: float) -> int:
        full = srv.iweight
        if start is None or self.o.ramp_s <= 0 or full <= 0:
            return full
        f0 = min(max(self.o.ramp_start, 0.0), 1.0)
        frac = f0 + (1.0 - f0) * min(1.0, max(0.0, now - start) / self.o.ramp_s)
        if frac >= 1.0:
            self._ramp.pop((srv.backend, srv.name), None)
        return max(1, min(full, round(full * frac)))

    def _resume_ramp(self, srv: Server, now: float) -> float | None:
        """A ready server below its weight that this agent did not ramp (it restarted, or
        someone set the weight): ramp on from where it is."""
        if self.o.ramp_s <= 0 or srv.iweight <= 0:
            return None
        f0 = min(max(self.o.ramp_start, 0.0), 0.999)
        frac = max(f0, srv.uweight / srv.iweight)
        start = now - self.o.ramp_s * (frac - f0) / (1.0 - f0)
        self._ramp[(srv.backend, srv.name)] = start
        return start

    # ---- failures -----------------------------------------------------------------------
    def _gone(self, e: HAProxyUnreachable, now: float) -> None:
        self.errors["unreachable"] += 1
        self.last_error = str(e)
        self._down_fails += 1
        delay = min(self.o.backoff_max_s, self.o.backoff_s * 2 ** (self._down_fails - 1))
        self._down_until = now + delay
        if self.up is not False:
            log.error("HAProxy unreachable: keeping the desired state, retrying with back-off",
                      extra={"event": "haproxy_unreachable", "error": str(e),
                             "retry_s": delay})
        else:
            log.debug("HAProxy still unreachable", extra={"event": "haproxy_unreachable",
                                                          "retry_s": delay})
        self.up = False
        self._due = dict.fromkeys(self.targets, 0.0)  # reconcile everything when back

    def _back(self, now: float) -> None:
        if self.up is False:
            self.counters["reconnects"] += 1
            self.counters["reconciles"] += 1
            log.info("HAProxy reachable again: reconciling every backend",
                     extra={"event": "haproxy_reachable", "down_attempts": self._down_fails})
        self.up = True
        self._down_fails = 0

    def _refused(self, backend: str, e: HAProxyRefused, now: float) -> None:
        self.errors["refused"] += 1
        self.last_error = str(e)
        k = self._fails.get(backend, 0) + 1
        self._fails[backend] = k
        delay = min(self.o.backoff_max_s, self.o.backoff_s * 2 ** (k - 1))
        self._due[backend] = now + delay
        # logged at error once per distinct answer; repeats are counted, logged at debug
        level = logging.DEBUG if self._last_refusal.get(backend) == e.answer else logging.ERROR
        self._last_refusal[backend] = e.answer
        log.log(level, "HAProxy refused a command", extra={
            "event": "haproxy_refused", "backend": backend, "command": e.command,
            "answer": e.answer, "error": str(e), "attempt": k, "retry_s": delay})

    def _warn_once(self, key, msg: str, **fields) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg, extra={"event": "skipped", **fields})

    # ---- shadow mode --------------------------------------------------------------------
    def _advise(self, now: float) -> None:
        """Log what would be done for each backend whose target changed; touch nothing."""
        for backend, t in self.targets.items():
            want, _ = t.wanted(self._wall(), self.o)
            key = (want, t.maxconn)
            if self._advised.get(backend) == key:
                continue
            self._advised[backend] = key
            self.counters["advisory_decisions"] += 1
            would: list[str] | str
            ramp, drain = dict(self._ramp), dict(self._drain)
            try:  # read-only: plan() reads HAProxy, its bookkeeping is put back
                actions, _, summary = self.plan(backend, now)
                would = [f"{k} {s}" + ("" if v is None else f" {v}") for k, s, v in actions]
            except HAProxyError as e:
                would, summary = f"unknown ({e})", {}
            finally:
                self._ramp, self._drain = ramp, drain
            log.info("advisory delta (daemon in shadow mode): not applied", extra={
                "event": "advisory", "backend": backend, "service": t.name,
                "desired": t.replicas, "wanted": want, "maxconn": t.maxconn,
                "would": would, "pool": summary.get("pool")})

    # ---- observability ------------------------------------------------------------------
    def stats(self) -> dict:
        with self._lock:
            return self._stats()

    def _stats(self) -> dict:
        out = {"haproxy_up": self.up, "commands": self.api.commands, **self.counters,
               "errors": dict(self.errors), "error_total": sum(self.errors.values()),
               "last_error": self.last_error, "backends": {b: dict(v) for b, v in
                                                          self._view.items()},
               "ramping": len(self._ramp), "draining": len(self._drain),
               "skipped_services": len(self.skipped)}
        sub = self.subscriber
        if sub is not None:
            out["daemon"] = {"instance": sub.instance, "sequence": sub.sequence,
                             "resyncs": sub.resyncs, "gaps": sub.gaps,
                             "heartbeat_age_s": round(time.monotonic() - sub.last_heartbeat, 3)
                             if sub.last_heartbeat else None,
                             "advisory": sub.state.advisory}
        return out


# ---- command line ---------------------------------------------------------------------------
def parse_map(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        svc, sep, backend = item.partition("=")
        if not sep or not svc or not NAME_RE.match(backend):
            raise ConfigError("--map", f"{item!r} is not SERVICE=BACKEND",
                              "write e.g. --map images=be_images (backend names: letters, "
                              "digits, '_', '.', ':', '-')")
        out[svc] = backend
    return out


def default_snapshot(subscribe: str) -> str:
    """The daemon's snapshot endpoint next to a publish endpoint: the configured default
    for the default, the next port for another tcp:// endpoint."""
    pub = bae_config.SCHEMA["publish"]
    if subscribe == pub["endpoint"].default:
        return pub["snapshot_endpoint"].default
    m = re.match(r"^tcp://(.+):(\d+)$", subscribe)
    if m and int(m.group(2)) < 65535:
        return f"tcp://{m.group(1)}:{int(m.group(2)) + 1}"
    raise ConfigError("--snapshot", f"no default next to --subscribe {subscribe}",
                      "give the daemon's publish.snapshot_endpoint with --snapshot")


def cmd_agent_haproxy(args) -> int:
    from . import logs
    from .cli import load_config

    logs.setup(args.log_level, args.log_format)
    subscribe, snapshot = args.subscribe, args.snapshot
    if args.config:
        cfg = load_config(args.config)
        subscribe = subscribe or cfg.publish.endpoint
        snapshot = snapshot or cfg.publish.snapshot_endpoint
    subscribe = subscribe or bae_config.SCHEMA["publish"]["endpoint"].default
    snapshot = snapshot or default_snapshot(subscribe)
    opts = AgentOptions(
        mapping=parse_map(args.map), only_mapped=args.only_mapped, reconcile_s=args.reconcile_s,
        step_s=args.step_s, ramp_s=args.ramp_s, ramp_start=args.ramp_start,
        drain_s=args.drain_s, prewarm_lead_s=args.prewarm_lead_s,
        prewarm_hold_s=args.prewarm_hold_s, prewarm_min_confidence=args.prewarm_min_confidence,
        min_ready=args.min_ready, backoff_max_s=args.backoff_max_s)
    agent = HAProxyAgent(RuntimeAPI(args.socket, args.timeout_s), opts)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("agent starting", extra={"event": "start", "socket": args.socket,
                                      "subscribe": subscribe, "snapshot": snapshot,
                                      "options": vars(opts)})
    with DeltaSubscriber(subscribe, snapshot, snapshot_timeout_s=args.snapshot_timeout_s,
                         server_public_key=args.server_key,
                         client_cert=args.client_cert) as sub:
        agent.run(sub, stop, stats_every_s=args.stats_every_s)
    log.info("agent stopped", extra={"event": "stopped", "stats": agent.stats()})
    print(json.dumps({"stopped": True, "stats": agent.stats()}), flush=True)
    return 0


def add_agent_parser(subparsers) -> None:
    """Register ``bae agent haproxy ...`` on ``bae``'s subparsers."""
    a = subparsers.add_parser("agent", help="apply the daemon's deltas to a load balancer")
    kinds = a.add_subparsers(dest="balancer", required=True)
    h = kinds.add_parser("haproxy", help="drive HAProxy backends through its runtime API "
                         "(docs/agent.md)", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    h.add_argument("--socket", required=True, metavar="PATH",
                   help="HAProxy stats socket ('stats socket PATH level admin')")
    h.add_argument("--subscribe", metavar="EP", help="the daemon's publish.endpoint "
                   f"(default {bae_config.SCHEMA['publish']['endpoint'].default}, or from "
                   "--config)")
    h.add_argument("--snapshot", metavar="EP", help="the daemon's publish.snapshot_endpoint "
                   "(default: from --config, else the configured default next to "
                   "--subscribe, else its port + 1)")
    h.add_argument("--config", help="the daemon's TOML config, to read its endpoints")
    h.add_argument("--map", action="append", metavar="SERVICE=BACKEND",
                   help="backend of a service (name or numeric id); default: the service's "
                   "name (repeatable)")
    h.add_argument("--only-mapped", action="store_true",
                   help="manage only the services given with --map")
    h.add_argument("--reconcile-s", type=float, default=5.0,
                   help="compare HAProxy with the desired state at least this often")
    h.add_argument("--step-s", type=float, default=0.5,
                   help="re-check interval while weights ramp or servers drain")
    h.add_argument("--ramp-s", type=float, default=30.0,
                   help="a server leaving maintenance reaches its configured weight after "
                   "this (0: at once)")
    h.add_argument("--ramp-start", type=float, default=0.1,
                   help="fraction of the configured weight a ramp starts at")
    h.add_argument("--drain-s", type=float, default=10.0,
                   help="scale-down: drain this long before maintenance (0: maintenance at "
                   "once)")
    h.add_argument("--prewarm-lead-s", type=float, default=30.0,
                   help="PREWARM: make servers ready this long before at_us")
    h.add_argument("--prewarm-hold-s", type=float, default=60.0,
                   help="PREWARM: keep them ready until this long after at_us")
    h.add_argument("--prewarm-min-confidence", type=float, default=0.0,
                   help="ignore PREWARM records less confident than this")
    h.add_argument("--min-ready", type=int, default=1,
                   help="never fewer ready servers than this in a managed backend")
    h.add_argument("--backoff-max-s", type=float, default=30.0,
                   help="longest wait between retries after HAProxy errors")
    h.add_argument("--timeout-s", type=float, default=2.0, help="stats socket timeout")
    h.add_argument("--snapshot-timeout-s", type=float, default=2.0,
                   help="give up on a snapshot request after this (then retry)")
    h.add_argument("--server-key", help="CURVE: the daemon's public key file")
    h.add_argument("--client-cert", help="CURVE: this agent's .key_secret file")
    h.add_argument("--stats-every-s", type=float, default=60.0,
                   help="log a JSON stats line this often")
    h.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"])
    h.add_argument("--log-format", default="json", choices=["json", "text"])
    h.set_defaults(fn=cmd_agent_haproxy)
