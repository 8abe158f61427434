//! The `authorize` Lambda function: the `$connect` route's REQUEST authorizer (with JWT auth).

use webchat::lambda::Function;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    webchat::lambda::runtime::serve(Function::Authorize).await
}
