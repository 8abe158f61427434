//! The `broadcast` Lambda function: API Gateway's `broadcast` route.

use webchat::lambda::Function;
use webchat::protocol::RouteKey;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    webchat::lambda::runtime::serve(Function::Route(RouteKey::Broadcast)).await
}
