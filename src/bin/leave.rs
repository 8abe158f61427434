//! The `leave` Lambda function: API Gateway's `leave` route.

use webchat::lambda::Function;
use webchat::protocol::RouteKey;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    webchat::lambda::runtime::serve(Function::Route(RouteKey::Leave)).await
}
