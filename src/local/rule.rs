//! The stack's EventBridge rule, in memory: `$connect` publishes the welcome event on the bus
//! ([`crate::adapters::memory::MemoryEventBus`]), and the rule hands it to `post` in the
//! EventBridge event shape, with the publisher's X-Ray trace header, as EventBridge passes it to a
//! target.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Shared, invoke};
use crate::adapters::memory::Routed;
use crate::lambda::events;
use crate::lambda::{self, Function};

/// The rule: every welcome event goes to `post`, continuing the trace of the `$connect` that
/// published it.
pub(crate) async fn run(shared: Arc<Shared>, mut deliveries: mpsc::UnboundedReceiver<Routed>) {
    while let Some(Routed {
        event,
        trace_header,
    }) = deliveries.recv().await
    {
        let shared = shared.clone();
        tokio::spawn(async move {
            let delivered = events::eventbridge_event(&event, "local");
            let request_id = delivered.id.clone().unwrap_or_default();
            let work = lambda::post(&shared.chat, delivered, shared.deadline());
            // A failure is logged in the invocation's span, as Lambda's would be.
            let _ = invoke(Function::Post, &request_id, trace_header.as_deref(), work).await;
        });
    }
}
