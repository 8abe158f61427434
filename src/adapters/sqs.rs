//! The shard queue on SQS through aws-sdk-sqs: jobs go out in batches of ten
//! (`SendMessageBatch`), and an entry SQS refuses is retried once on its own before the enqueue
//! fails (the caller then fails its invocation, and what it was doing is retried).

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use futures_util::future::BoxFuture;

use crate::ports::{QueueError, ShardJob, ShardQueue};
use crate::telemetry::{aws_span, call};

/// SQS's most entries a `SendMessageBatch`.
const BATCH: usize = 10;
/// SQS's largest batch, all bodies together (1 MiB).
const BATCH_BYTES: usize = 1024 * 1024;

#[derive(Clone, Debug)]
pub struct SqsShardQueue {
    client: Client,
    queue_url: String,
}

impl SqsShardQueue {
    pub fn new(client: Client, queue_url: &str) -> Self {
        SqsShardQueue {
            client,
            queue_url: queue_url.to_owned(),
        }
    }

    async fn send(&self, bodies: Vec<String>) -> Result<(), QueueError> {
        let mut pending = bodies;
        // One retry for the entries a batch reports as failed (SQS's partial failures).
        for attempt in 0..2 {
            let entries = pending
                .iter()
                .enumerate()
                .map(|(i, body)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .build()
                        .map_err(|error| QueueError(error.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let send = self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send();
            let output = call(aws_span("SQS", "SendMessageBatch"), send)
                .await
                .map_err(|error| QueueError(DisplayErrorContext(error).to_string()))?;
            let failed = output.failed();
            if failed.is_empty() {
                return Ok(());
            }
            let reasons: Vec<String> = failed
                .iter()
                .map(|entry| format!("{}: {}", entry.code(), entry.message().unwrap_or("")))
                .collect();
            if attempt == 1 {
                return Err(QueueError(format!(
                    "SQS refused {} job(s): {}",
                    failed.len(),
                    reasons.join("; ")
                )));
            }
            tracing::warn!(failed = failed.len(), reasons = ?reasons, "SQS refused some jobs; retrying them");
            let retry: Vec<usize> = failed
                .iter()
                .filter_map(|entry| entry.id().parse().ok())
                .collect();
            pending = retry
                .into_iter()
                .filter_map(|i| pending.get(i).cloned())
                .collect();
        }
        Ok(())
    }
}

impl ShardQueue for SqsShardQueue {
    fn enqueue(&self, jobs: Vec<ShardJob>) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async move {
            let mut batch = Vec::new();
            let mut bytes = 0;
            for job in jobs {
                let body = serde_json::to_string(&job).expect("a job always serializes");
                if batch.len() == BATCH || (bytes + body.len() > BATCH_BYTES && !batch.is_empty()) {
                    self.send(std::mem::take(&mut batch)).await?;
                    bytes = 0;
                }
                bytes += body.len();
                batch.push(body);
            }
            if !batch.is_empty() {
                self.send(batch).await?;
            }
            Ok(())
        })
    }
}
