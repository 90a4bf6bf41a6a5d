//! Prometheus metrics, served on `metrics_listen_addr` at `/metrics`. One process-wide set,
//! like the tracing subscriber: the shell (engine writer, map hub, streams, DERP) records
//! into it; the pure core never sees it.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::OnceLock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    pub direction: &'static str,
}

/// A webhook endpoint (its config name or managed id).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: String,
}

pub struct Metrics {
    registry: Registry,
    /// Webhook events delivered (acknowledged with a 2xx), per endpoint.
    pub webhook_events_delivered: Family<EndpointLabel, Counter>,
    /// Webhook requests that failed (no answer or not a 2xx), per endpoint.
    pub webhook_failed_attempts: Family<EndpointLabel, Counter>,
    /// Log records between an endpoint's cursor and the head, as of its last delivery.
    pub webhook_lag_events: Family<EndpointLabel, Gauge>,
    /// Nodes with an open map stream.
    pub nodes_connected: Gauge,
    /// Nodes registered, by method (auth key, CLI, interactive...).
    pub registrations: Family<MethodLabel, Counter>,
    /// Events appended to the log, by event type.
    pub events_appended: Family<TypeLabel, Counter>,
    /// A command's time from submission to durable acknowledgement (queue, decide, append,
    /// apply) — what an API call or registration waits for.
    pub command_seconds: Histogram,
    /// One group commit's write + fdatasync.
    pub flush_seconds: Histogram,
    /// Map messages sent, `full` (a stream's first) or `delta`, and keep-alives.
    pub map_messages: Family<KindLabel, Counter>,
    pub map_bytes: Family<KindLabel, Counter>,
    /// From the hub's tick starting with changes pending to every affected session's
    /// message being queued.
    pub fanout_seconds: Histogram,
    /// Clients connected to the embedded DERP relay.
    pub derp_connections: Gauge,
    /// Bytes the embedded DERP relay received from and sent to clients.
    pub derp_bytes: Family<DirectionLabel, Counter>,
    /// 1 while the engine can write its log; 0 from a failed append until a later commit (or
    /// a successful write probe while idle).
    pub engine_up: Gauge,
    /// Start-up snapshots that differed from a full replay of the log (audit L11): each
    /// one is evidence of tampering by someone holding the signing key, or a bug.
    pub snapshot_mismatches: Counter,
    /// Appends that lost a race to another instance on a shared log (then caught up,
    /// decided again and retried).
    pub append_conflicts: Counter,
    /// Events read from a shared log that other instances appended.
    pub events_tailed: Counter,
    /// Live instances on the shared PostgreSQL, this one included (as last read).
    pub presence_instances: Gauge,
    /// Rows of the shared presence table this instance wrote (upserted or deleted).
    pub presence_rows_written: Counter,
    /// ACME orders (first or renewal) that failed; the certificate in force stays (acme/).
    pub acme_order_failures: Counter,
    /// When the ACME certificate in force expires (Unix seconds); 0 before the first one.
    pub acme_certificate_expiry: Gauge,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("headscale");
        let nodes_connected = Gauge::default();
        let registrations = Family::default();
        let events_appended = Family::default();
        // 50 µs … ~1.6 s
        let command_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        let flush_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        let map_messages = Family::default();
        let map_bytes = Family::default();
        // 100 µs … ~3.3 s
        let fanout_seconds = Histogram::new(exponential_buckets(0.000_1, 2.0, 16));
        let derp_connections = Gauge::default();
        let derp_bytes = Family::default();
        let engine_up = Gauge::default();
        let snapshot_mismatches = Counter::default();
        let append_conflicts = Counter::default();
        registry.register(
            "append_conflicts",
            "Appends that lost a race to another instance on the shared log (then retried)",
            append_conflicts.clone(),
        );
        let events_tailed = Counter::default();
        registry.register(
            "events_tailed",
            "Events read from the shared log that other instances appended",
            events_tailed.clone(),
        );
        let presence_instances = Gauge::default();
        registry.register(
            "presence_instances",
            "Live instances seen in the shared presence table, this one included",
            presence_instances.clone(),
        );
        let presence_rows_written = Counter::default();
        registry.register(
            "presence_rows_written",
            "Rows of the shared presence table this instance wrote (upserted or deleted)",
            presence_rows_written.clone(),
        );
        registry.register(
            "snapshot_mismatches",
            "Start-up snapshots that differed from a full replay of the log (then discarded)",
            snapshot_mismatches.clone(),
        );
        registry.register(
            "engine_up",
            "1 while the engine can write its event log, 0 while appends fail",
            engine_up.clone(),
        );
        registry.register(
            "nodes_connected",
            "Nodes with an open map stream",
            nodes_connected.clone(),
        );
        registry.register(
            "registrations",
            "Nodes registered, by method",
            registrations.clone(),
        );
        registry.register(
            "events_appended",
            "Events appended to the log, by type",
            events_appended.clone(),
        );
        registry.register(
            "command_duration_seconds",
            "Submission to durable acknowledgement of one command",
            command_seconds.clone(),
        );
        registry.register(
            "log_flush_duration_seconds",
            "Write and fdatasync of one group commit",
            flush_seconds.clone(),
        );
        registry.register(
            "map_messages",
            "Map messages sent: full, delta, keepalive",
            map_messages.clone(),
        );
        registry.register(
            "map_bytes",
            "Bytes of map messages on the wire (after compression): full, delta, keepalive",
            map_bytes.clone(),
        );
        registry.register(
            "map_fanout_duration_seconds",
            "From a tick with pending changes to every affected session's message queued",
            fanout_seconds.clone(),
        );
        registry.register(
            "derp_connections",
            "Clients connected to the embedded DERP relay",
            derp_connections.clone(),
        );
        registry.register(
            "derp_bytes",
            "Bytes through the embedded DERP relay: received, sent",
            derp_bytes.clone(),
        );
        let acme_order_failures = Counter::default();
        let acme_certificate_expiry = Gauge::default();
        registry.register(
            "acme_order_failures",
            "ACME certificate orders (first or renewal) that failed",
            acme_order_failures.clone(),
        );
        registry.register(
            "acme_certificate_expiry_timestamp_seconds",
            "When the ACME certificate in force expires (Unix time)",
            acme_certificate_expiry.clone(),
        );
        let webhook_events_delivered = Family::default();
        registry.register(
            "webhook_events_delivered",
            "Webhook events delivered and acknowledged with a 2xx, per endpoint",
            webhook_events_delivered.clone(),
        );
        let webhook_failed_attempts = Family::default();
        registry.register(
            "webhook_failed_attempts",
            "Webhook requests that failed (no answer or not a 2xx), per endpoint",
            webhook_failed_attempts.clone(),
        );
        let webhook_lag_events = Family::default();
        registry.register(
            "webhook_lag_events",
            "Log records between a webhook endpoint's cursor and the head",
            webhook_lag_events.clone(),
        );
        Metrics {
            registry,
            webhook_events_delivered,
            webhook_failed_attempts,
            webhook_lag_events,
            nodes_connected,
            registrations,
            events_appended,
            command_seconds,
            flush_seconds,
            map_messages,
            map_bytes,
            fanout_seconds,
            derp_connections,
            derp_bytes,
            engine_up,
            snapshot_mismatches,
            append_conflicts,
            events_tailed,
            presence_instances,
            presence_rows_written,
            acme_order_failures,
            acme_certificate_expiry,
        }
    }

    pub fn event(&self, kind: &'static str) {
        self.events_appended
            .get_or_create(&TypeLabel { r#type: kind })
            .inc();
    }

    pub fn map_message(&self, kind: &'static str, bytes: usize) {
        self.map_messages.get_or_create(&KindLabel { kind }).inc();
        self.map_bytes
            .get_or_create(&KindLabel { kind })
            .inc_by(bytes as u64);
    }

    pub fn derp_bytes(&self, direction: &'static str, bytes: usize) {
        self.derp_bytes
            .get_or_create(&DirectionLabel { direction })
            .inc_by(bytes as u64);
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// `count` webhook events were acknowledged by `endpoint`.
pub fn webhook_delivered(endpoint: &str, count: usize) {
    metrics()
        .webhook_events_delivered
        .get_or_create(&EndpointLabel {
            endpoint: endpoint.to_string(),
        })
        .inc_by(count as u64);
}

/// A webhook request to `endpoint` failed.
pub fn webhook_failed(endpoint: &str) {
    metrics()
        .webhook_failed_attempts
        .get_or_create(&EndpointLabel {
            endpoint: endpoint.to_string(),
        })
        .inc();
}

/// `endpoint`'s cursor is `lag` records behind the head.
pub fn webhook_lag(endpoint: &str, lag: u64) {
    metrics()
        .webhook_lag_events
        .get_or_create(&EndpointLabel {
            endpoint: endpoint.to_string(),
        })
        .set(lag as i64);
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_family() {
        let m = metrics();
        m.event("UserCreated");
        m.map_message("full", 100);
        m.derp_bytes("received", 5);
        m.registrations
            .get_or_create(&MethodLabel { method: "cli" })
            .inc();
        let text = m.encode();
        for name in [
            "headscale_nodes_connected",
            "headscale_registrations_total{method=\"cli\"}",
            "headscale_events_appended_total{type=\"UserCreated\"}",
            "headscale_command_duration_seconds_bucket",
            "headscale_log_flush_duration_seconds_bucket",
            "headscale_map_messages_total{kind=\"full\"}",
            "headscale_map_bytes_total{kind=\"full\"}",
            "headscale_map_fanout_duration_seconds_bucket",
            "headscale_derp_connections",
            "headscale_derp_bytes_total{direction=\"received\"}",
            "headscale_engine_up",
            "headscale_snapshot_mismatches_total",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
