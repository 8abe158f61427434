//! The `disconnect` Lambda function: API Gateway's `$disconnect` route.

use webchat::protocol::RouteKey;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    webchat::lambda::runtime::serve_route(RouteKey::Disconnect).await
}
