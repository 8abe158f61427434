//! The stack's EventBridge bus and rule, in memory: `$connect` publishes the welcome event, and
//! the rule hands it to `post` in the EventBridge event shape, with the publisher's X-Ray trace
//! header, as EventBridge passes it to a target.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Shared, events, invoke};
use crate::lambda::{self, Function};
use crate::ports::{BusError, BusEvent, EventBus};
use crate::telemetry;

/// An event on its way to the rule's target.
#[derive(Clone, Debug)]
pub(crate) struct Delivery {
    event: BusEvent,
    /// The X-Ray trace header of the publisher.
    trace_header: Option<String>,
}

/// The bus: every event goes to the rule, and nothing is kept.
#[derive(Debug)]
pub struct LocalBus {
    rule: mpsc::UnboundedSender<Delivery>,
}

impl LocalBus {
    pub(crate) fn new() -> (LocalBus, mpsc::UnboundedReceiver<Delivery>) {
        let (rule, deliveries) = mpsc::unbounded_channel();
        (LocalBus { rule }, deliveries)
    }
}

impl EventBus for LocalBus {
    async fn publish(&self, event: BusEvent) -> Result<(), BusError> {
        let trace_header = telemetry::current_xray_header();
        self.rule
            .send(Delivery {
                event,
                trace_header,
            })
            .map_err(|_| BusError("the rule is not listening any more".into()))
    }
}

/// The rule: every welcome event goes to `post`, continuing the trace of the `$connect` that
/// published it.
pub(crate) async fn run(shared: Arc<Shared>, mut deliveries: mpsc::UnboundedReceiver<Delivery>) {
    while let Some(Delivery {
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
