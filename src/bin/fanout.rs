//! The `fanout` Lambda function: fed by the shard queue, delivers one shard of a large broadcast
//! (a scan segment from a cursor), and hands the rest of the segment on if its time runs out.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    webchat::lambda::runtime::serve(webchat::lambda::Function::Fanout).await
}
