//! The `post` Lambda function: delivers the welcome events EventBridge routes to it.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    webchat::lambda::runtime::serve(webchat::lambda::Function::Post).await
}
