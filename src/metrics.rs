//! Prometheus metrics: request counts and latencies per route, and security
//! events per type.
//!
//! Each server state owns its recorder (no process-wide global), so several
//! servers in one process, as in the tests, count separately. Labels are
//! bounded: routes are the matched templates (`/api/users/{id}`), never raw
//! paths, and nothing a client sends becomes a label value as it is.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Key, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

/// Requests answered, by method, route and status.
pub const HTTP_REQUESTS: &str = "kraliki_http_requests_total";
/// Time to answer, by method and route.
pub const HTTP_DURATION: &str = "kraliki_http_request_duration_seconds";
/// Security events raised, by type and severity.
pub const SECURITY_EVENTS: &str = "kraliki_security_events_total";

/// The route label of a request that matched no route.
pub const UNMATCHED: &str = "unmatched";

/// Histogram buckets for request durations, in seconds: sub-millisecond
/// answers up to the 30 s request timeout.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static METADATA: Metadata<'static> = Metadata::new("kraliki", Level::INFO, Some(module_path!()));

/// Methods that become label values as they are; anything else is `other`.
const KNOWN_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
];

/// Histogram samples are buffered until they are folded into the buckets,
/// which rendering does; nothing may render for months, so every this many
/// requests the buffers are folded in here, keeping memory bounded.
const UPKEEP_EVERY: u64 = 4096;

/// The metrics of one server.
pub struct Metrics {
    recorder: PrometheusRecorder,
    recorded: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty set of metrics with their descriptions.
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), DURATION_BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        recorder.describe_counter(
            HTTP_REQUESTS.into(),
            None,
            "HTTP requests answered, by method, route template and status.".into(),
        );
        recorder.describe_histogram(
            HTTP_DURATION.into(),
            Some(Unit::Seconds),
            "Time from receiving a request to its response head, by method and route template."
                .into(),
        );
        recorder.describe_counter(
            SECURITY_EVENTS.into(),
            None,
            "Security events raised, by type and severity.".into(),
        );
        Metrics {
            recorder,
            recorded: AtomicU64::new(0),
        }
    }

    /// Count one answered request and its duration.
    pub fn http_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let method = if KNOWN_METHODS.contains(&method) {
            method.to_string()
        } else {
            "other".to_string()
        };
        let counted = Key::from_parts(
            HTTP_REQUESTS,
            vec![
                Label::new("method", method.clone()),
                Label::new("route", route.to_string()),
                Label::new("status", status.to_string()),
            ],
        );
        self.recorder
            .register_counter(&counted, &METADATA)
            .increment(1);
        let timed = Key::from_parts(
            HTTP_DURATION,
            vec![
                Label::new("method", method),
                Label::new("route", route.to_string()),
            ],
        );
        self.recorder
            .register_histogram(&timed, &METADATA)
            .record(elapsed.as_secs_f64());
        if self.recorded.fetch_add(1, Ordering::Relaxed) % UPKEEP_EVERY == UPKEEP_EVERY - 1 {
            self.recorder.handle().run_upkeep();
        }
    }

    /// Count one security event.
    pub fn security_event(&self, event_type: &'static str, severity: &'static str) {
        let key = Key::from_parts(
            SECURITY_EVENTS,
            vec![
                Label::new("type", event_type),
                Label::new("severity", severity),
            ],
        );
        self.recorder.register_counter(&key, &METADATA).increment(1);
    }

    /// Everything, in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        self.recorder.handle().render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_folded_in_by_upkeep_are_all_counted() {
        let m = Metrics::new();
        let n = UPKEEP_EVERY * 2 + 10;
        for _ in 0..n {
            m.http_request("GET", "/health", 200, Duration::from_micros(300));
        }
        let text = m.render();
        let count = format!(
            r#"kraliki_http_request_duration_seconds_count{{method="GET",route="/health"}} {n}"#
        );
        assert!(text.contains(&count), "{text}");
        let fast = format!(
            r#"kraliki_http_request_duration_seconds_bucket{{method="GET",route="/health",le="0.0005"}} {n}"#
        );
        assert!(text.contains(&fast), "{text}");
    }

    #[test]
    fn renders_counts_by_label() {
        let m = Metrics::new();
        m.http_request("GET", "/api/calls", 200, Duration::from_millis(3));
        m.http_request("GET", "/api/calls", 200, Duration::from_millis(4));
        m.http_request("BREW", UNMATCHED, 404, Duration::from_millis(1));
        m.security_event("AUTH_FAILURE", "MEDIUM");
        let text = m.render();
        assert!(
            text.contains(
                r#"kraliki_http_requests_total{method="GET",route="/api/calls",status="200"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"kraliki_http_requests_total{method="other",route="unmatched",status="404"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"kraliki_http_request_duration_seconds_bucket{method="GET",route="/api/calls",le="0.005"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"kraliki_security_events_total{type="AUTH_FAILURE",severity="MEDIUM"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("# HELP kraliki_security_events_total"),
            "{text}"
        );
    }
}
