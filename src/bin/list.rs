//! The `list` Lambda function: API Gateway's `list` route.

use webchat::lambda::Function;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    webchat::lambda::runtime::serve(Function::List).await
}
