// Broadcasts at internet scale: `broadcast` splits an audience larger than one Scan page into Scan
// segments and sends each as a job to the shard queue; the `fanout` worker takes them one at a
// time through an event source mapping, at most `workers` invocations at once. A worker near its
// deadline sends the rest of its segment back to the queue as a new job; a job that fails
// `maxReceiveCount` times goes to the dead-letter queue.
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";

/** Receives before a job goes to the dead-letter queue. */
export const MAX_RECEIVE_COUNT = 3;
/** SQS's longest visibility timeout (12 hours). */
const MAX_VISIBILITY_TIMEOUT = 43200;

/** AWS's recommendation for a queue behind a Lambda event source mapping: at least six times the
 * function's timeout, which leaves Lambda time to retry a job while the function is throttled
 * before the job becomes visible again. */
export function visibilityTimeout(workerTimeout: number): number {
  return Math.min(6 * workerTimeout, MAX_VISIBILITY_TIMEOUT);
}

export interface ShardQueueArgs {
  /** The worker's timeout in seconds. */
  workerTimeout: number;
}

/** The shard queue and its dead-letter queue, both encrypted with SQS-managed keys. */
export class ShardQueue extends pulumi.ComponentResource {
  public readonly queue: aws.sqs.Queue;
  public readonly deadLetters: aws.sqs.Queue;

  constructor(name: string, args: ShardQueueArgs, opts?: pulumi.ComponentResourceOptions) {
    super("webchat:index:ShardQueue", name, {}, opts);
    this.deadLetters = new aws.sqs.Queue(
      `${name}-dead-letters`,
      // SQS's longest retention: time to look at what failed, and to redrive it
      { messageRetentionSeconds: 14 * 24 * 3600, sqsManagedSseEnabled: true },
      { parent: this },
    );
    this.queue = new aws.sqs.Queue(
      name,
      {
        sqsManagedSseEnabled: true,
        visibilityTimeoutSeconds: visibilityTimeout(args.workerTimeout),
        // a broadcast a day late is no broadcast; jobs that keep failing leave far sooner
        messageRetentionSeconds: 24 * 3600,
        redrivePolicy: this.deadLetters.arn.apply((deadLetterTargetArn) =>
          JSON.stringify({ deadLetterTargetArn, maxReceiveCount: MAX_RECEIVE_COUNT }),
        ),
      },
      { parent: this },
    );
    this.registerOutputs({ queue: this.queue.url, deadLetters: this.deadLetters.url });
  }
}

export interface ShardWorkersArgs {
  queue: aws.sqs.Queue;
  worker: aws.lambda.Function;
  /** Jobs per invocation. */
  batchSize: number;
  /** Invocations at once (2 to 1000). */
  workers: number;
}

/** The worker's trigger: the queue, a job per invocation, failures reported per job. */
export class ShardWorkers extends pulumi.ComponentResource {
  public readonly mapping: aws.lambda.EventSourceMapping;

  constructor(name: string, args: ShardWorkersArgs, opts?: pulumi.ComponentResourceOptions) {
    super("webchat:index:ShardWorkers", name, {}, opts);
    this.mapping = new aws.lambda.EventSourceMapping(
      name,
      {
        eventSourceArn: args.queue.arn,
        functionName: args.worker.arn,
        batchSize: args.batchSize,
        // a worker that fails a job says so in its answer (batchItemFailures), and the job
        // returns to the queue; the other jobs of the batch are not retried
        functionResponseTypes: ["ReportBatchItemFailures"],
        // the pollers start no more invocations than this: with the post rate each gets
        // (POST_RATE), it bounds the rate of every fan-out together
        scalingConfig: { maximumConcurrency: args.workers },
      },
      { parent: this },
    );
    this.registerOutputs({});
  }
}
