//! Adapters: the ports implemented for a place to run.
//!
//! - [`memory`]: in-memory store, management API and event bus. They power `webchat-local` and
//!   every handler's unit tests, and record what they were asked to do.
//!
//! The local gateway's own connection registry (in [`crate::local`]) is the management-API adapter
//! that reaches real sockets.

pub mod memory;
