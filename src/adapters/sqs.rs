//! The shard queue on SQS through aws-sdk-sqs: jobs go out in batches of ten
//! (`SendMessageBatch`, several batches at once), and an entry SQS refuses is retried once on its
//! own before the enqueue fails (the caller then fails its invocation, and what it was doing is
//! retried).

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use futures_util::future::BoxFuture;
use futures_util::stream::{self, StreamExt, TryStreamExt};

use crate::ports::{QueueError, ShardJob, ShardQueue};
use crate::telemetry::{aws_span, call};

/// SQS's most entries a `SendMessageBatch`.
const BATCH: usize = 10;
/// SQS's largest batch, all bodies together (1 MiB).
const BATCH_BYTES: usize = 1024 * 1024;
/// Batches sent at once: a thousand-segment broadcast is a hundred batches, two seconds one after
/// the other at SQS's usual 20 ms.
const BATCHES_IN_FLIGHT: usize = 10;

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
            let mut batches = vec![Vec::new()];
            let mut bytes = 0;
            for job in jobs {
                let body = serde_json::to_string(&job).expect("a job always serializes");
                let batch = batches.last_mut().expect("never empty");
                if batch.len() == BATCH || (bytes + body.len() > BATCH_BYTES && !batch.is_empty()) {
                    batches.push(Vec::new());
                    bytes = 0;
                }
                bytes += body.len();
                batches.last_mut().expect("never empty").push(body);
            }
            stream::iter(batches.into_iter().filter(|batch| !batch.is_empty()))
                .map(|batch| self.send(batch))
                .buffer_unordered(BATCHES_IN_FLIGHT)
                .try_for_each(|()| async { Ok(()) })
                .await?;
            Ok(())
        })
    }
}
