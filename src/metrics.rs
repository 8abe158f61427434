//! CloudWatch metrics with no API call: every fan-out's summary event (an inline broadcast, a
//! sharded broadcast, a shard job; target [`FANOUT_TARGET`]) is also written to stdout as one
//! JSON line in the Embedded Metric Format, which CloudWatch Logs turns into metrics of the
//! stack's namespace, by function. The stack's dashboard draws them.
//!
//! ```json
//! {"_aws":{"Timestamp":1764403200000,"CloudWatchMetrics":[{"Namespace":"webchat/stage",
//!   "Dimensions":[["Function"]],"Metrics":[{"Name":"Broadcasts","Unit":"Count"},…,
//!   {"Name":"FanOutDuration","Unit":"Milliseconds"}]}]},
//!  "Function":"broadcast","kind":"inline","Broadcasts":1,"Delivered":48,…,"FanOutDuration":35}
//! ```

use std::io::Write;

use serde_json::{Map, Value, json};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

pub use crate::domain::FANOUT_TARGET;

/// Where the metrics go: the namespace (the stack's), and the function they are by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metrics {
    pub namespace: String,
    pub function: &'static str,
}

/// A summary event's counts, as metric names: (event field, metric).
const COUNTS: [(&str, &str); 6] = [
    ("delivered", "Delivered"),
    ("pruned", "Pruned"),
    ("connecting", "Connecting"),
    ("failed", "Failed"),
    ("not_attempted", "NotAttempted"),
    ("throttled", "Throttled"),
];

impl Metrics {
    /// The EMF line for a summary event with `fields`, at `timestamp_ms`; `None` if the event is
    /// not one of the fan-out kinds.
    pub fn line(&self, fields: &Map<String, Value>, timestamp_ms: u64) -> Option<Value> {
        let kind = fields.get("kind")?.as_str()?;
        let events: &[&str] = match kind {
            "inline" => &["Broadcasts"],
            "sharded" => &["Broadcasts", "ShardedBroadcasts"],
            "shard" => &["ShardJobs"],
            _ => return None,
        };
        let mut line = Map::new();
        let mut metrics = Vec::new();
        for name in events {
            line.insert((*name).into(), json!(1));
            metrics.push(json!({"Name": name, "Unit": "Count"}));
        }
        for (field, name) in COUNTS {
            if let Some(value) = fields.get(field).and_then(Value::as_u64) {
                line.insert(name.into(), json!(value));
                metrics.push(json!({"Name": name, "Unit": "Count"}));
            }
        }
        if let Some(took) = fields.get("duration_ms").and_then(Value::as_u64) {
            line.insert("FanOutDuration".into(), json!(took));
            metrics.push(json!({"Name": "FanOutDuration", "Unit": "Milliseconds"}));
        }
        line.insert("Function".into(), json!(self.function));
        line.insert("kind".into(), json!(kind));
        if let Some(broadcast) = fields.get("broadcast") {
            line.insert("broadcast".into(), broadcast.clone());
        }
        line.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": [["Function"]],
                    "Metrics": metrics,
                }],
            }),
        );
        Some(Value::Object(line))
    }
}

/// Collects an event's fields as JSON values.
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), json!(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), json!(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), json!(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), json!(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), json!(format!("{value:?}")));
    }
}

/// The layer that writes the EMF lines, one `write` each, to stdout (what Lambda sends to
/// CloudWatch Logs, where EMF is extracted).
impl<S: Subscriber> Layer<S> for Metrics {
    fn on_event(&self, event: &Event<'_>, _context: Context<'_, S>) {
        if event.metadata().target() != FANOUT_TARGET {
            return;
        }
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        if let Some(line) = self.line(&fields.0, now) {
            let mut text = line.to_string();
            text.push('\n');
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_summary_becomes_an_emf_line_with_every_count_and_its_duration() {
        let metrics = Metrics {
            namespace: "webchat/stage".into(),
            function: "fanout",
        };
        let fields = json!({"kind": "shard", "broadcast": "b1", "delivered": 7, "pruned": 1,
            "connecting": 0, "failed": 2, "not_attempted": 0, "throttled": 3, "duration_ms": 41,
            "connection_id": "c="});
        let line = metrics
            .line(fields.as_object().unwrap(), 1_764_403_200_000)
            .unwrap();
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(line["_aws"]["Timestamp"], 1_764_403_200_000u64);
        assert_eq!(directive["Namespace"], "webchat/stage");
        assert_eq!(directive["Dimensions"], json!([["Function"]]));
        let names: Vec<&str> = directive["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "ShardJobs",
                "Delivered",
                "Pruned",
                "Connecting",
                "Failed",
                "NotAttempted",
                "Throttled",
                "FanOutDuration"
            ]
        );
        // Every metric has its value at the top level, and the dimension too (EMF's rule).
        for name in names {
            assert!(line[name].is_u64(), "{name}");
        }
        assert_eq!(line["Function"], "fanout");
        assert_eq!(line["Delivered"], 7);
        assert_eq!(line["Throttled"], 3);
        assert_eq!(line["FanOutDuration"], 41);
        assert!(
            line.get("connection_id").is_none(),
            "no connection ids in metrics"
        );
    }

    #[test]
    fn a_sharded_broadcast_counts_as_a_broadcast_and_a_sharded_one() {
        let metrics = Metrics {
            namespace: "n".into(),
            function: "broadcast",
        };
        let fields = json!({"kind": "sharded", "segments": 4, "estimate": 20000});
        let line = metrics.line(fields.as_object().unwrap(), 0).unwrap();
        assert_eq!(line["Broadcasts"], 1);
        assert_eq!(line["ShardedBroadcasts"], 1);
        assert!(line.get("Delivered").is_none());
        let other = json!({"kind": "something else"});
        assert!(metrics.line(other.as_object().unwrap(), 0).is_none());
    }
}
