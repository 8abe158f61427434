//! Adapters: the ports implemented for a place to run.
//!
//! - [`memory`]: in-memory store, management API and event bus. They power `webchat-local` and
//!   every handler's unit tests, and record what they were asked to do.
//! - `dynamodb`, `rooms`, `limits`, `eventbridge`, `management`, `sqs` (the `aws` feature): the AWS services through
//!   aws-sdk-rust, as the Lambda functions use them (`sigv4`: the signature of a post).
//!
//! The local gateway's own connection registry (in `crate::local`) is the management-API adapter
//! that reaches real sockets.

#[cfg(feature = "aws")]
pub mod dynamodb;
#[cfg(feature = "aws")]
pub mod eventbridge;
#[cfg(feature = "aws")]
pub mod limits;
#[cfg(feature = "aws")]
pub mod management;
pub mod memory;
#[cfg(feature = "aws")]
pub mod rooms;
#[cfg(feature = "aws")]
pub mod sigv4;
#[cfg(feature = "aws")]
pub mod sqs;
