//! The `cleanup` Lambda function: run by a schedule, removes stale connection records.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    webchat::lambda::runtime::serve(webchat::lambda::Function::Cleanup).await
}
