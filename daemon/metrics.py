"""Prometheus exposition: a collector that reads the daemon's live counters at scrape time
(nothing is incremented on the hot path for Prometheus' sake)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class DaemonCollector:
    def __init__(self, daemon):
        self.d = daemon

    def collect(self):
        c, e = self.d.counters, self.d.engine
        acc = CounterMetricFamily("bae_events_accepted", "Records accepted, by type",
                                  labels=["type"])
        for t, n in e.accepted.items():
            acc.add_metric([t.name.lower()], n)
        yield acc
        rej = CounterMetricFamily("bae_events_rejected", "Records rejected, by reason",
                                  labels=["reason"])
        for reason, n in sorted(c.events_rejected.items()):
            rej.add_metric([reason], n)
        yield rej
        yield CounterMetricFamily("bae_frames", "Messages received on ingest sockets",
                                  value=c.frames)
        fr = CounterMetricFamily("bae_frames_rejected", "Messages rejected whole, by reason",
                                 labels=["reason"])
        for reason, n in sorted(c.frames_rejected.items()):
            fr.add_metric([reason], n)
        yield fr
        yield CounterMetricFamily("bae_sequence_gaps", "Messages missing from producers' "
                                  "sequences", value=c.sequence_gaps)
        yield CounterMetricFamily("bae_producer_restarts", "Producers seen restarting at "
                                  "sequence 0", value=c.producer_restarts)
        yield GaugeMetricFamily("bae_producers", "Producers seen", value=len(self.d.producers))
        yield CounterMetricFamily("bae_late_events_dropped", "Events older than the lateness "
                                  "tolerance", value=e.late_dropped)
        yield CounterMetricFamily("bae_deltas_published", "Delta messages published",
                                  value=c.deltas_published)
        yield CounterMetricFamily("bae_snapshots_served", "Snapshots sent to subscribers",
                                  value=c.snapshots_served)
        yield GaugeMetricFamily("bae_subscribers", "Connected delta subscribers",
                                value=c.subscribers)
        lag = GaugeMetricFamily("bae_loop_lag_seconds", "Event-loop lag over the last minute",
                                labels=["quantile"])
        for q, v in self.d.lag.quantiles().items():
            lag.add_metric([q], v)
        yield lag
        yield GaugeMetricFamily("bae_users", "Users with state", value=len(e.users))
        yield GaugeMetricFamily("bae_services", "Services with state", value=len(e.services))
        yield GaugeMetricFamily("bae_checkpoint_age_seconds", "Seconds since the last "
                                "checkpoint", value=self.d.checkpoint_age_s())
        yield CounterMetricFamily("bae_checkpoints", "Checkpoints written", value=c.checkpoints)
        yield CounterMetricFamily("bae_checkpoint_failures", "Checkpoints that failed",
                                  value=c.checkpoint_failures)
        yield CounterMetricFamily("bae_journal_failures", "Journal flushes that failed "
                                  "(disk full, IO error)", value=c.journal_failures)
        yield CounterMetricFamily("bae_durable_duplicates", "Durable messages received again "
                                  "and acknowledged again", value=c.duplicates)
        yield CounterMetricFamily("bae_durable_acks", "Acknowledgements sent to durable "
                                  "producers", value=c.acks)
        yield CounterMetricFamily("bae_users_evicted", "Idle users folded into their segment",
                                  value=e.evicted)
        yield CounterMetricFamily("bae_model_reloads", "LSTM model files hot-reloaded",
                                  value=c.model_reloads)
        yield CounterMetricFamily("bae_model_failures", "Learned models that failed to "
                                  "load, reload or refit (the online models serve)",
                                  value=c.model_failures)
        yield CounterMetricFamily("bae_user_surges", "User-hours flagged far above the "
                                  "user's own profile (scraper, bot, surge)",
                                  value=e.user_surges)
        degraded = GaugeMetricFamily("bae_degraded", "1 while a part is failing (serving "
                                     "from memory)", labels=["part"])
        problems = self.d.health()
        for part in ("journal", "checkpoint"):
            degraded.add_metric([part], float(part in problems))
        yield degraded
        yield GaugeMetricFamily("bae_ready", "1 when serving", value=float(self.d.ready))


def make_registry(daemon) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(DaemonCollector(daemon))
    ProcessCollector(registry=reg)  # process_resident_memory_bytes and friends
    return reg


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
