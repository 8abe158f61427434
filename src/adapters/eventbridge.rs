//! The event bus on EventBridge. PutEvents reports failures per entry with HTTP 200, so a
//! non-zero `FailedEntryCount` is an error here, never a silent success.

use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::error::DisplayErrorContext;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;

use crate::ports::{BusError, BusEvent, EventBus};
use crate::telemetry::{aws_span, call, current_xray_header};

#[derive(Clone, Debug)]
pub struct EventBridgeBus {
    client: Client,
    bus_name: String,
}

impl EventBridgeBus {
    pub fn new(client: Client, bus_name: impl Into<String>) -> Self {
        EventBridgeBus {
            client,
            bus_name: bus_name.into(),
        }
    }
}

impl EventBus for EventBridgeBus {
    async fn publish(&self, event: BusEvent) -> Result<(), BusError> {
        let span = aws_span("EventBridge", "PutEvents");
        // The entry carries the trace, with this call as the parent: EventBridge hands the header
        // to the target as its invocation's trace header, so `post` continues this trace.
        let trace_header = span.in_scope(current_xray_header);
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus_name)
            .source(event.source)
            .detail_type(event.detail_type)
            .detail(event.detail)
            .set_trace_header(trace_header)
            .build();
        let put = self.client.put_events().entries(entry).send();
        let output = call(span, put)
            .await
            .map_err(|error| BusError(DisplayErrorContext(error).to_string()))?;
        if output.failed_entry_count() > 0 {
            let failed = output
                .entries()
                .iter()
                .find(|entry| entry.error_code().is_some());
            return Err(BusError(format!(
                "PutEvents failed for the entry: {} ({})",
                failed
                    .and_then(|e| e.error_code())
                    .unwrap_or("no error code"),
                failed
                    .and_then(|e| e.error_message())
                    .unwrap_or("no message"),
            )));
        }
        Ok(())
    }
}
