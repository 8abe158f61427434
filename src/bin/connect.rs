//! The `connect` Lambda function: API Gateway's `$connect` route.

use webchat::protocol::RouteKey;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    webchat::lambda::runtime::serve_route(RouteKey::Connect).await
}
