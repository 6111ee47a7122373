//! exec-server's Prometheus metrics: one set of families for the whole process, counted into by core, the dispatch and the transports, and encoded in the Prometheus text format for `/metrics`.
//!
//! Every family is created once ([`metrics`]) and every hot-path counter is a
//! pre-made handle (an atomic add, no lock, no allocation). Labels take only values
//! from small fixed sets (a method name of the protocol, a stream, a spawn step, an
//! error code): never a process id, a session id or any other string a client
//! chooses, so the number of series is bounded whatever clients do.

mod process;

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of what [`encode`] writes (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// An output stream, as a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types, missing_docs)]
pub enum StreamLabel {
    stdout,
    stderr,
    pty,
}

/// Labels of the output byte counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StreamLabels {
    stream: StreamLabel,
}

/// Labels of the per-method families: the method's name as the protocol spells it, or
/// `other` for a name the server does not know (never the client's text).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

/// Labels of the error counter: the method and the JSON-RPC error code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ErrorLabels {
    method: &'static str,
    code: i32,
}

/// Labels of spawn failures: the step that failed (SPEC section 3 `data.step`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StepLabels {
    step: &'static str,
}

/// Labels of refused connections: why.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusedLabels {
    reason: &'static str,
}

/// Labels of the session gauge.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SessionStateLabels {
    state: &'static str,
}

fn latency_histogram() -> Histogram {
    // 100 µs to ~100 s in steps of ×4 (long polls of `process/read` wait up to 300 s and
    // land in +Inf).
    Histogram::new([
        0.0001, 0.0004, 0.0016, 0.0064, 0.0256, 0.1024, 0.4096, 1.6384, 6.5536, 26.2144, 104.8576,
    ])
}

/// Every metric of the server. Reach it through [`metrics`].
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,

    /// Open WebSocket connections.
    pub connections: Gauge,
    /// WebSocket connections opened since start.
    pub connections_opened: Counter,
    refused: Family<RefusedLabels, Counter>,

    sessions: Family<SessionStateLabels, Gauge>,
    /// Sessions created by `initialize` (not resumes).
    pub sessions_created: Counter,
    /// Sessions resumed by `initialize` with `resumeSessionId`.
    pub sessions_resumed: Counter,
    /// Detached sessions that expired (their processes terminated).
    pub sessions_expired: Counter,

    /// Processes whose leader has not exited yet.
    pub processes_running: Gauge,
    /// Processes started since start.
    pub processes_started: Counter,
    spawn_failures: Family<StepLabels, Counter>,

    output_stdout: Counter,
    output_stderr: Counter,
    output_pty: Counter,

    requests: Family<MethodLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    latency: Family<MethodLabels, Histogram, fn() -> Histogram>,

    /// Messages that had to wait for room in a connection's outbound queue
    /// (connection-wide backpressure, SPEC 7.2).
    pub backpressure_waits: Counter,
    /// Times a process stopped being read because its flow-control window was full
    /// (SPEC 13).
    pub window_stalls: Counter,
    /// Output bytes dropped from retention (per-process or server-wide bound).
    pub evicted_bytes: Counter,
    /// Output bytes retained for `process/read`, all sessions together.
    pub retained_bytes: Gauge,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(process::ProcessCollector));
        let connections = Gauge::default();
        let connections_opened = Counter::default();
        let refused = Family::<RefusedLabels, Counter>::default();
        let sessions = Family::<SessionStateLabels, Gauge>::default();
        let sessions_created = Counter::default();
        let sessions_resumed = Counter::default();
        let sessions_expired = Counter::default();
        let processes_running = Gauge::default();
        let processes_started = Counter::default();
        let spawn_failures = Family::<StepLabels, Counter>::default();
        let output = Family::<StreamLabels, Counter>::default();
        let requests = Family::<MethodLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let latency = Family::<MethodLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let backpressure_waits = Counter::default();
        let window_stalls = Counter::default();
        let evicted_bytes = Counter::default();
        let retained_bytes = Gauge::default();

        let output_for = |stream| output.get_or_create_owned(&StreamLabels { stream });
        let output_stdout = output_for(StreamLabel::stdout);
        let output_stderr = output_for(StreamLabel::stderr);
        let output_pty = output_for(StreamLabel::pty);
        for state in ["attached", "detached"] {
            let _ = sessions.get_or_create_owned(&SessionStateLabels { state });
        }

        let r = registry.sub_registry_with_prefix("exec_server");
        r.register(
            "connections",
            "Open WebSocket connections",
            connections.clone(),
        );
        r.register(
            "connections_opened",
            "WebSocket connections opened",
            connections_opened.clone(),
        );
        r.register(
            "connections_refused",
            "HTTP requests and connections refused, by reason (auth, origin, limit, pending, tls)",
            refused.clone(),
        );
        r.register(
            "sessions",
            "Live sessions, by state (attached to a connection, or detached awaiting resume)",
            sessions.clone(),
        );
        r.register(
            "sessions_created",
            "Sessions created by initialize",
            sessions_created.clone(),
        );
        r.register(
            "sessions_resumed",
            "Sessions resumed by initialize with resumeSessionId",
            sessions_resumed.clone(),
        );
        r.register(
            "sessions_expired",
            "Detached sessions that expired",
            sessions_expired.clone(),
        );
        r.register(
            "processes_running",
            "Started processes whose leader has not exited",
            processes_running.clone(),
        );
        r.register(
            "processes_started",
            "Processes started",
            processes_started.clone(),
        );
        r.register(
            "spawn_failures",
            "process/start calls whose spawn failed, by the step that failed",
            spawn_failures.clone(),
        );
        r.register(
            "output_bytes",
            "Output bytes read from processes, by stream",
            output,
        );
        r.register(
            "requests",
            "JSON-RPC requests answered, by method",
            requests.clone(),
        );
        r.register(
            "request_errors",
            "JSON-RPC requests answered with an error, by method and code",
            errors.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time from reading a request to queueing its response, by method",
            latency.clone(),
        );
        r.register(
            "backpressure_waits",
            "Messages that waited for room in a connection's outbound queue",
            backpressure_waits.clone(),
        );
        r.register(
            "window_stalls",
            "Times a process's output stopped being read because its flow-control window was full",
            window_stalls.clone(),
        );
        r.register(
            "evicted_bytes",
            "Output bytes evicted from retention",
            evicted_bytes.clone(),
        );
        r.register(
            "retained_bytes",
            "Output bytes retained for process/read, all sessions together",
            retained_bytes.clone(),
        );

        Metrics {
            registry,
            connections,
            connections_opened,
            refused,
            sessions,
            sessions_created,
            sessions_resumed,
            sessions_expired,
            processes_running,
            processes_started,
            spawn_failures,
            output_stdout,
            output_stderr,
            output_pty,
            requests,
            errors,
            latency,
            backpressure_waits,
            window_stalls,
            evicted_bytes,
            retained_bytes,
        }
    }

    /// Counts `bytes` of output read from `stream`.
    pub fn output(&self, stream: StreamLabel, bytes: usize) {
        let counter = match stream {
            StreamLabel::stdout => &self.output_stdout,
            StreamLabel::stderr => &self.output_stderr,
            StreamLabel::pty => &self.output_pty,
        };
        counter.inc_by(bytes as u64);
    }

    /// Counts a spawn that failed at `step` (a SPEC `data.step` name, or `unknown`).
    pub fn spawn_failed(&self, step: &'static str) {
        self.spawn_failures
            .get_or_create(&StepLabels { step })
            .inc();
    }

    /// Counts a refused connection or request (`auth`, `origin`, `limit`, `pending`, `tls`).
    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&RefusedLabels { reason }).inc();
    }

    /// Records one answered request: `method` is a protocol method name (or `other`),
    /// `error` its JSON-RPC error code when it failed, `elapsed` the time from reading
    /// it to queueing its response.
    pub fn request(&self, method: &'static str, error: Option<i32>, elapsed: Duration) {
        self.requests.get_or_create(&MethodLabels { method }).inc();
        if let Some(code) = error {
            self.errors
                .get_or_create(&ErrorLabels { method, code })
                .inc();
        }
        self.latency
            .get_or_create(&MethodLabels { method })
            .observe(elapsed.as_secs_f64());
    }

    /// Sets the session gauge (read from the session registry at scrape time).
    pub fn set_sessions(&self, attached: usize, detached: usize) {
        for (state, n) in [("attached", attached), ("detached", detached)] {
            self.sessions
                .get_or_create(&SessionStateLabels { state })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Every metric in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail; a collector that fails leaves what it wrote.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The metrics of this process.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample `name` (with its labels as written) in `text`.
    fn sample(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn families_are_exposed_with_their_labels_and_move() {
        let m = Metrics::new();
        m.output(StreamLabel::stderr, 7);
        m.output(StreamLabel::stderr, 5);
        m.spawn_failed("exec");
        m.request("process/start", None, Duration::from_millis(3));
        m.request("process/start", Some(-32000), Duration::from_millis(1));
        m.set_sessions(2, 1);
        m.refused("auth");
        let text = m.encode();
        let want = [
            ("exec_server_output_bytes_total{stream=\"stderr\"}", 12.0),
            ("exec_server_output_bytes_total{stream=\"stdout\"}", 0.0),
            ("exec_server_spawn_failures_total{step=\"exec\"}", 1.0),
            ("exec_server_requests_total{method=\"process/start\"}", 2.0),
            (
                "exec_server_request_errors_total{method=\"process/start\",code=\"-32000\"}",
                1.0,
            ),
            (
                "exec_server_request_duration_seconds_count{method=\"process/start\"}",
                2.0,
            ),
            (
                "exec_server_request_duration_seconds_bucket{method=\"process/start\",le=\"0.0016\"}",
                1.0,
            ),
            ("exec_server_sessions{state=\"attached\"}", 2.0),
            ("exec_server_sessions{state=\"detached\"}", 1.0),
            (
                "exec_server_connections_refused_total{reason=\"auth\"}",
                1.0,
            ),
            ("exec_server_retained_bytes", 0.0),
        ];
        let got: Vec<(&str, Option<f64>)> =
            want.iter().map(|(n, _)| (*n, sample(&text, n))).collect();
        let expected: Vec<(&str, Option<f64>)> = want.iter().map(|(n, v)| (*n, Some(*v))).collect();
        assert_eq!(got, expected, "{text}");
        assert!(text.contains("# TYPE exec_server_request_duration_seconds histogram"));
    }

    #[test]
    fn the_standard_process_metrics_are_there() {
        let text = Metrics::new().encode();
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
            "process_threads",
        ] {
            let value = sample(&text, name);
            assert!(value.is_some_and(|v| v >= 0.0), "{name} in {text}");
        }
        assert!(sample(&text, "process_resident_memory_bytes").is_some_and(|v| v > 0.0));
        assert!(sample(&text, "process_start_time_seconds").is_some_and(|v| v > 1.0e9));
    }
}
