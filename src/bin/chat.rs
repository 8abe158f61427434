//! The `chat` Lambda function: API Gateway's `chat` route.

use webchat::protocol::RouteKey;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    webchat::lambda::runtime::serve_route(RouteKey::Chat).await
}
