//! CloudWatch metrics with no API call: every summary the routes report (an inline broadcast, a
//! sharded broadcast, a shard job, a cleanup; [`Summary`]) is written to stdout as one JSON line
//! in the Embedded Metric Format, which CloudWatch Logs turns into metrics of the stack's
//! namespace, by function. The stack's dashboard draws them.
//!
//! ```json
//! {"_aws":{"Timestamp":1764403200000,"CloudWatchMetrics":[{"Namespace":"webchat/stage",
//!   "Dimensions":[["Function"]],"Metrics":[{"Name":"Broadcasts","Unit":"Count"},…,
//!   {"Name":"FanOutDuration","Unit":"Milliseconds"}]}]},
//!  "Function":"broadcast","kind":"inline","Broadcasts":1,"Delivered":48,…,"FanOutDuration":35}
//! ```

use std::io::Write;

use serde_json::{Map, Value, json};

use crate::domain::Summary;
use crate::ports::Metrics;

/// EMF lines on stdout (what Lambda sends to CloudWatch Logs, where EMF is extracted): the
/// namespace (the stack's), and the function the metrics are by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Emf {
    pub namespace: String,
    pub function: &'static str,
}

impl Emf {
    /// The EMF line for `summary`, at `timestamp_ms`.
    pub fn line(&self, summary: &Summary, timestamp_ms: u64) -> Value {
        let mut line = Map::new();
        let mut names = Vec::new();
        for metric in summary.metrics() {
            line.insert(metric.name.into(), json!(metric.value));
            names.push(json!({"Name": metric.name, "Unit": metric.unit.as_cloudwatch()}));
        }
        line.insert("Function".into(), json!(self.function));
        line.insert("kind".into(), json!(summary.kind()));
        if let Some(broadcast) = summary.broadcast() {
            line.insert("broadcast".into(), json!(broadcast));
        }
        line.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": [["Function"]],
                    "Metrics": names,
                }],
            }),
        );
        Value::Object(line)
    }
}

impl Metrics for Emf {
    /// One `write` a line, whatever the log level: the lines have no level, and Lambda's
    /// application log filter treats them as INFO (the stack keeps it at INFO or below).
    fn record(&self, summary: &Summary) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        let mut text = self.line(summary, now).to_string();
        text.push('\n');
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ShardedBroadcast;

    fn emf(function: &'static str) -> Emf {
        Emf {
            namespace: "webchat/stage".into(),
            function,
        }
    }

    #[test]
    fn a_shard_summary_becomes_an_emf_line_with_every_count_and_its_duration() {
        let summary = crate::domain::example_shard();
        let line = emf("fanout").line(&summary, 1_764_403_200_000);
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
        let expected: Vec<&str> = summary.metrics().iter().map(|m| m.name).collect();
        assert_eq!(names, expected);
        // Every metric has its value at the top level, and the dimension too (EMF's rule).
        for name in names {
            assert!(line[name].is_u64(), "{name}");
        }
        assert_eq!(
            directive["Metrics"].as_array().unwrap().last().unwrap()["Unit"],
            "Milliseconds"
        );
        assert_eq!(line["Function"], "fanout");
        assert_eq!(line["kind"], "shard");
        assert_eq!(line["broadcast"], "b1");
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
        let summary = Summary::Sharded(ShardedBroadcast {
            room: None,
            sender: "c=".into(),
            broadcast: "b2".into(),
            segments: 4,
            estimate: 20_000,
        });
        let line = emf("broadcast").line(&summary, 0);
        assert_eq!(line["Broadcasts"], 1);
        assert_eq!(line["ShardedBroadcasts"], 1);
        assert!(line.get("Delivered").is_none());
    }
}
