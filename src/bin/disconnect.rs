//! The `disconnect` Lambda function: API Gateway's `$disconnect` route.

use webchat::lambda::Function;
use webchat::protocol::RouteKey;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    webchat::lambda::runtime::serve(Function::Route(RouteKey::Disconnect)).await
}
