// The stack's CloudWatch dashboard: the metrics `broadcast`, `fanout` and `cleanup` log in the
// Embedded Metric Format (namespace METRICS_NAMESPACE, one dimension, Function), the post rate
// against its budget, the shard queue and its dead letters, and every function's errors and
// throttles.
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";

/** The functions whose fan-outs log metrics: the Function dimension's values. */
export const METRIC_FUNCTIONS = ["broadcast", "fanout"] as const;

/** The counts the fan-outs log (unit Count; the dashboard shows their Sum). */
export const COUNTS = {
  /** Broadcasts started, sharded or not. */
  broadcasts: ["Broadcasts", "ShardedBroadcasts", "ShardJobs"],
  /** What became of each connection addressed. */
  outcomes: ["Delivered", "Pruned", "Connecting", "Failed", "NotAttempted", "Throttled"],
} as const;
/** How long a fan-out took (unit Milliseconds), shown as these statistics. */
export const DURATION = { metric: "FanOutDuration", stats: ["p50", "p99", "Maximum"] } as const;
/** What each `cleanup` run logs (the Function dimension's value "cleanup"): counts, and its duration. */
export const CLEANUP = {
  counts: ["Cleanups", "CleanupChecked", "CleanupExpired", "CleanupGone", "CleanupFailed"],
  duration: "CleanupDuration",
} as const;
/** The outcomes that are each one `@connections` post: their sum per second is the post rate. */
const POSTS = ["Delivered", "Pruned", "Connecting", "Failed"] as const;

export interface DashboardInputs {
  region: string;
  /** METRICS_NAMESPACE. */
  namespace: string;
  /** Every function's name, as Lambda knows it. */
  functionNames: string[];
  shardQueueName: string;
  deadLetterQueueName: string;
  /** The post rate budget, drawn as a line on the post rate. */
  postRateBudget: number;
}

type Metric = (string | Record<string, unknown>)[];

/** The dashboard's body (what `dashboardBody` holds, as JSON): two columns of graphs. */
export function dashboardBody(inputs: DashboardInputs): object {
  const { namespace, region } = inputs;
  const widget = (x: number, y: number, title: string, metrics: Metric[], extra: Record<string, unknown> = {}) => ({
    type: "metric",
    x,
    y,
    width: 12,
    height: 6,
    properties: { title, region, view: "timeSeries", stacked: false, period: 60, metrics, yAxis: { left: { min: 0 } }, ...extra },
  });
  const perFunction = (names: readonly string[], stat: string): Metric[] =>
    names.flatMap((name) =>
      METRIC_FUNCTIONS.map((fn) => [namespace, name, "Function", fn, { stat, label: `${name} (${fn})` }]),
    );
  const posts: Metric[] = POSTS.flatMap((name, i) =>
    METRIC_FUNCTIONS.map((fn, j) => [namespace, name, "Function", fn, { stat: "Sum", id: `m${i * METRIC_FUNCTIONS.length + j}`, visible: false }]),
  );
  const postIds = posts.map((metric) => (metric[4] as { id: string }).id);
  const durations: Metric[] = METRIC_FUNCTIONS.flatMap((fn) =>
    DURATION.stats.map((stat) => [namespace, DURATION.metric, "Function", fn, { stat, label: `${stat} (${fn})` }]),
  );
  const queues = (metric: string): Metric[] =>
    [
      [inputs.shardQueueName, "shard jobs"],
      [inputs.deadLetterQueueName, "dead letters"],
    ].map(([queue, label]) => ["AWS/SQS", metric, "QueueName", queue, { stat: "Maximum", label }]);
  const lambda = (metric: string): Metric[] =>
    inputs.functionNames.map((fn) => ["AWS/Lambda", metric, "FunctionName", fn, { stat: "Sum" }]);
  const widgets = [
    widget(0, 0, "Broadcasts and shard jobs", perFunction(COUNTS.broadcasts, "Sum")),
    widget(
      12,
      0,
      "@connections posts per second, against the budget",
      [
        [{ expression: `SUM([${postIds.join(",")}])/PERIOD(${postIds[0]})`, label: "posts/s (Delivered + Pruned + Connecting + Failed)", id: "rate" }],
        ...posts,
      ],
      { annotations: { horizontal: [{ label: "webchat:postRateBudget", value: inputs.postRateBudget }] } },
    ),
    widget(0, 6, "What became of each connection", perFunction(COUNTS.outcomes, "Sum")),
    widget(12, 6, "Fan-out duration (ms)", durations),
    widget(0, 12, "Jobs waiting", queues("ApproximateNumberOfMessagesVisible")),
    widget(12, 12, "Age of the oldest job (s)", queues("ApproximateAgeOfOldestMessage")),
    widget(0, 18, "Lambda errors", lambda("Errors")),
    widget(12, 18, "Lambda throttles", lambda("Throttles")),
    widget(
      0,
      24,
      "Cleanup: runs, records checked and removed",
      CLEANUP.counts.map((name) => [namespace, name, "Function", "cleanup", { stat: "Sum", label: name }]),
    ),
    widget(12, 24, "Cleanup duration (ms)", [[namespace, CLEANUP.duration, "Function", "cleanup", { stat: "Maximum" }]]),
  ];
  return { widgets };
}

export interface DashboardArgs {
  dashboardName: string;
  namespace: string;
  functions: aws.lambda.Function[];
  shardQueue: aws.sqs.Queue;
  deadLetters: aws.sqs.Queue;
  postRateBudget: number;
}

export class Dashboard extends pulumi.ComponentResource {
  public readonly dashboard: aws.cloudwatch.Dashboard;
  /** The dashboard in the CloudWatch console. */
  public readonly url: pulumi.Output<string>;

  constructor(name: string, args: DashboardArgs, opts?: pulumi.ComponentResourceOptions) {
    super("webchat:index:Dashboard", name, {}, opts);
    const region = aws.getRegionOutput({}, { parent: this }).region;
    this.dashboard = new aws.cloudwatch.Dashboard(
      name,
      {
        dashboardName: args.dashboardName,
        dashboardBody: pulumi
          .all([region, pulumi.all(args.functions.map((f) => f.name)), args.shardQueue.name, args.deadLetters.name])
          .apply(([region, functionNames, shardQueueName, deadLetterQueueName]) =>
            JSON.stringify(
              dashboardBody({
                region,
                namespace: args.namespace,
                functionNames,
                shardQueueName,
                deadLetterQueueName,
                postRateBudget: args.postRateBudget,
              }),
            ),
          ),
      },
      { parent: this },
    );
    this.url = pulumi.interpolate`https://${region}.console.aws.amazon.com/cloudwatch/home?region=${region}#dashboards/dashboard/${this.dashboard.dashboardName}`;
    this.registerOutputs({ url: this.url });
  }
}
