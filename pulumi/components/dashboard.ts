// The stack's three CloudWatch dashboards, each within the free tier's 50 metrics (CloudWatch's
// free tier is 3 dashboards of up to 50 metrics; past that a dashboard is $3.00 a month):
// - the chat (`webchat-<stack>`): the metrics `broadcast`, `fanout` and `cleanup` log in the
//   Embedded Metric Format (namespace METRICS_NAMESPACE, one dimension, Function), the post rate
//   against its budget, and the rooms: messages, history reads and presence frames;
// - the functions (`webchat-<stack>-functions`): every function's errors and throttles, and the
//   shard queue and its dead letters;
// - the limits (`webchat-<stack>-limits`): what the per-client limits refused, in all (what the
//   refusals alarm watches) and by kind. A frame's refusals are logged by each of the seven
//   message routes' functions (a metric each, by its Function dimension), 33 metrics in all, which
//   the chat dashboard, at 50 lines already, has no room for.
// test/dashboard.test.ts counts each one's metrics, with and without sign-in.
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { CONNECT_FUNCTION, MESSAGE_FUNCTIONS, ROUTES } from "../names";

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
/** What the rooms log (unit Count, shown as Sum per minute), and which functions log it. */
export const ROOMS = {
  /** A message to a room, delivered inline or sharded (a sharded one is a ShardedBroadcast too). */
  messages: { metric: "RoomMessages", functions: ["broadcast"] },
  /** A page of a room's history read: by `history`, and by `join` when it catches up. */
  historyReads: { metric: "HistoryReads", functions: ["history", "join"] },
  /** Presence frames posted to a room's other members when one joined or left. */
  presenceFrames: {
    metric: "PresenceFrames",
    functions: ["join", "leave", "disconnect", "broadcast", "chat", "cleanup", "fanout"],
  },
} as const;
/** What the per-client limits log (unit Count, one per refusal; shown as Sum per minute), and
 * which functions log it (src/domain/guard.rs): the message routes' functions, where every frame
 * takes from its budgets before any work (the Lambda glue); `broadcast`, the one route that
 * charges the delivery budget; and `$connect`'s, which counts a user's connections. */
export const LIMITS = {
  /** Frames over their connection's frame budget. */
  refusedFrames: { metric: "RefusedFrames", functions: MESSAGE_FUNCTIONS },
  /** Frames over their user's frame budget, across the user's connections. */
  refusedUserFrames: { metric: "RefusedUserFrames", functions: MESSAGE_FUNCTIONS },
  /** Broadcasts over what was left of the delivery budget, answered `rate_limited`... */
  refusedBroadcasts: { metric: "RefusedBroadcasts", functions: [ROUTES.broadcast] },
  /** ...and the deliveries they would have addressed (a broadcast's audience). */
  refusedDeliveries: { metric: "RefusedDeliveries", functions: [ROUTES.broadcast] },
  /** Broadcasts larger than the whole budget, or to everyone where that is off: `forbidden`. */
  forbiddenBroadcasts: { metric: "ForbiddenBroadcasts", functions: [ROUTES.broadcast] },
  /** Connections closed after 100 refused frames in a minute. */
  closedConnections: { metric: "ClosedConnections", functions: MESSAGE_FUNCTIONS },
  /** Connects past a user's webchat:connectionsPerUser. */
  refusedConnects: { metric: "RefusedConnects", functions: [CONNECT_FUNCTION] },
} as const;
/** Every refusal once, whatever its kind (a refused broadcast once, not by its audience; not the
 * closes that follow refusals), by each function that refuses: the message routes' and
 * `$connect`'s. One total of eight metrics, so that an alarm can sum it within the 10 metrics
 * CloudWatch lets an alarm read (components/alarms.ts); the kinds above need 17. */
export const ALL_REFUSALS = { metric: "Refusals", functions: [...MESSAGE_FUNCTIONS, CONNECT_FUNCTION] } as const;

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
  /** The refusals alarm's threshold (a minute) and periods, drawn as a line on the refusals. */
  refusalsAlarm: { threshold: number; periods: number };
}

type Metric = (string | Record<string, unknown>)[];

/** A graph of the given metric lines, 6 high, in a grid 24 wide. */
function widget(region: string, x: number, y: number, title: string, metrics: Metric[], extra: Record<string, unknown> = {}, width = 12) {
  return {
    type: "metric",
    x,
    y,
    width,
    height: 6,
    properties: { title, region, view: "timeSeries", stacked: false, period: 60, metrics, yAxis: { left: { min: 0 } }, ...extra },
  };
}

/** Each function's count of `metric`, hidden, and their sum per period: one line however many
 * log it (metric math ids: a lower-case letter first, then letters, digits and _). */
function summedLines(namespace: string, metric: string, functions: readonly string[], label: string): Metric[] {
  const id = metric.toLowerCase();
  const ids = functions.map((_, i) => `${id}${i}`);
  return [
    [{ expression: `SUM([${ids.join(",")}])`, label, id }],
    ...functions.map((fn, i): Metric => [namespace, metric, "Function", fn, { stat: "Sum", id: ids[i], visible: false }]),
  ];
}

/** The chat dashboard's body (what `dashboardBody` holds, as JSON): the fan-outs, the post rate,
 * cleanup and the rooms, two columns of graphs and a row of three. */
export function chatDashboardBody(inputs: Pick<DashboardInputs, "region" | "namespace" | "postRateBudget">): object {
  const { namespace, region } = inputs;
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
  const widgets = [
    widget(region, 0, 0, "Broadcasts and shard jobs", perFunction(COUNTS.broadcasts, "Sum")),
    widget(
      region,
      12,
      0,
      "@connections posts per second, against the budget",
      [
        [{ expression: `SUM([${postIds.join(",")}])/PERIOD(${postIds[0]})`, label: "posts/s (Delivered + Pruned + Connecting + Failed)", id: "rate" }],
        ...posts,
      ],
      { annotations: { horizontal: [{ label: "webchat:postRateBudget", value: inputs.postRateBudget }] } },
    ),
    widget(region, 0, 6, "What became of each connection", perFunction(COUNTS.outcomes, "Sum")),
    widget(region, 12, 6, "Fan-out duration (ms)", durations),
    widget(
      region,
      0,
      12,
      "Cleanup: runs, records checked and removed",
      CLEANUP.counts.map((name) => [namespace, name, "Function", "cleanup", { stat: "Sum", label: name }]),
    ),
    widget(region, 12, 12, "Cleanup duration (ms)", [[namespace, CLEANUP.duration, "Function", "cleanup", { stat: "Maximum" }]]),
    // the rooms: three graphs of a third of the width each
    widget(
      region,
      0,
      18,
      "Rooms: messages per minute",
      ROOMS.messages.functions.map((fn) => [namespace, ROOMS.messages.metric, "Function", fn, { stat: "Sum", label: `room messages (${fn})` }]),
      {},
      8,
    ),
    widget(
      region,
      8,
      18,
      "Rooms: history reads per minute",
      ROOMS.historyReads.functions.map((fn) => [namespace, ROOMS.historyReads.metric, "Function", fn, { stat: "Sum", label: `history reads (${fn})` }]),
      {},
      8,
    ),
    widget(
      region,
      16,
      18,
      "Rooms: presence frames per minute",
      summedLines(namespace, ROOMS.presenceFrames.metric, ROOMS.presenceFrames.functions, "presence frames (every function)"),
      {},
      8,
    ),
  ];
  return { widgets };
}

/** The limits dashboard's body: what the limits refused, per minute. On top, every refusal of any
 * kind, summed over the functions that refuse, against the refusals alarm's threshold (what the
 * alarm watches); below, each kind one line (summed over the functions that log it, if several
 * do): frames and connections, then broadcasts. */
export function limitsDashboardBody(inputs: Pick<DashboardInputs, "region" | "namespace" | "refusalsAlarm">): object {
  const { namespace, region, refusalsAlarm } = inputs;
  const summed = (kind: { metric: string; functions: readonly string[] }, label: string): Metric[] =>
    kind.functions.length === 1
      ? [[namespace, kind.metric, "Function", kind.functions[0], { stat: "Sum", label: `${label} (${kind.functions[0]})` }]]
      : summedLines(namespace, kind.metric, kind.functions, label);
  const widgets = [
    widget(
      region,
      0,
      0,
      "Limits: refusals of every kind per minute",
      summed(ALL_REFUSALS, "every refusal, every function (Refusals)"),
      {
        annotations: {
          horizontal: [
            { label: `the refusals alarm: at least this for ${refusalsAlarm.periods} minutes running`, value: refusalsAlarm.threshold },
          ],
        },
      },
      24,
    ),
    widget(
      region,
      0,
      6,
      "Limits: refused frames per minute",
      [
        ...summed(LIMITS.refusedFrames, "over the connection's frame budget (RefusedFrames)"),
        ...summed(LIMITS.refusedUserFrames, "over the user's frame budget (RefusedUserFrames)"),
      ],
      {},
      8,
    ),
    widget(region, 8, 6, "Limits: connections closed per minute", summed(LIMITS.closedConnections, "closed for refusals (ClosedConnections)"), {}, 8),
    widget(region, 16, 6, "Limits: refused connects per minute", summed(LIMITS.refusedConnects, "past webchat:connectionsPerUser (RefusedConnects)"), {}, 8),
    widget(region, 0, 12, "Limits: refused and forbidden broadcasts per minute", [
      ...summed(LIMITS.refusedBroadcasts, "over the delivery budget, rate_limited (RefusedBroadcasts)"),
      ...summed(LIMITS.forbiddenBroadcasts, "larger than the budget or to everyone, forbidden (ForbiddenBroadcasts)"),
    ]),
    widget(region, 12, 12, "Limits: deliveries refused per minute", summed(LIMITS.refusedDeliveries, "the refused broadcasts' audiences (RefusedDeliveries)")),
  ];
  return { widgets };
}

/** The functions dashboard's body: every function's errors and throttles (two metrics a
 * function), and the shard queue and its dead letters, two columns of graphs. */
export function functionsDashboardBody(
  inputs: Pick<DashboardInputs, "region" | "functionNames" | "shardQueueName" | "deadLetterQueueName">,
): object {
  const { region } = inputs;
  const queues = (metric: string): Metric[] =>
    [
      [inputs.shardQueueName, "shard jobs"],
      [inputs.deadLetterQueueName, "dead letters"],
    ].map(([queue, label]) => ["AWS/SQS", metric, "QueueName", queue, { stat: "Maximum", label }]);
  const lambda = (metric: string): Metric[] =>
    inputs.functionNames.map((fn) => ["AWS/Lambda", metric, "FunctionName", fn, { stat: "Sum" }]);
  const widgets = [
    widget(region, 0, 0, "Lambda errors", lambda("Errors")),
    widget(region, 12, 0, "Lambda throttles", lambda("Throttles")),
    widget(region, 0, 6, "Jobs waiting", queues("ApproximateNumberOfMessagesVisible")),
    widget(region, 12, 6, "Age of the oldest job (s)", queues("ApproximateAgeOfOldestMessage")),
  ];
  return { widgets };
}

export interface DashboardArgs {
  /** The dashboards' names: the chat's (the stack's prefix), the functions' and the limits'. */
  dashboardNames: { chat: string; functions: string; limits: string };
  namespace: string;
  functions: aws.lambda.Function[];
  shardQueue: aws.sqs.Queue;
  deadLetters: aws.sqs.Queue;
  postRateBudget: number;
  refusalsAlarm: { threshold: number; periods: number };
}

/** The stack's dashboards: the chat's (`dashboard`, `url`), the functions' (`functionsDashboard`,
 * `functionsUrl`) and the limits' (`limitsDashboard`, `limitsUrl`). The chat's keeps the logical name and the dashboard name the single dashboard
 * had, so an existing stack updates it in place. */
export class Dashboard extends pulumi.ComponentResource {
  /** The chat: fan-outs, post rate, cleanup, rooms. */
  public readonly dashboard: aws.cloudwatch.Dashboard;
  /** The chat dashboard in the CloudWatch console. */
  public readonly url: pulumi.Output<string>;
  /** Every function's errors and throttles, and the shard queues. */
  public readonly functionsDashboard: aws.cloudwatch.Dashboard;
  /** The functions dashboard in the CloudWatch console. */
  public readonly functionsUrl: pulumi.Output<string>;
  /** What the per-client limits refused. */
  public readonly limitsDashboard: aws.cloudwatch.Dashboard;
  /** The limits dashboard in the CloudWatch console. */
  public readonly limitsUrl: pulumi.Output<string>;

  constructor(name: string, args: DashboardArgs, opts?: pulumi.ComponentResourceOptions) {
    super("webchat:index:Dashboard", name, {}, opts);
    const region = aws.getRegionOutput({}, { parent: this }).region;
    this.dashboard = new aws.cloudwatch.Dashboard(
      name,
      {
        dashboardName: args.dashboardNames.chat,
        dashboardBody: region.apply((region) =>
          JSON.stringify(chatDashboardBody({ region, namespace: args.namespace, postRateBudget: args.postRateBudget })),
        ),
      },
      { parent: this },
    );
    this.functionsDashboard = new aws.cloudwatch.Dashboard(
      `${name}-functions`,
      {
        dashboardName: args.dashboardNames.functions,
        dashboardBody: pulumi
          .all([region, pulumi.all(args.functions.map((f) => f.name)), args.shardQueue.name, args.deadLetters.name])
          .apply(([region, functionNames, shardQueueName, deadLetterQueueName]) =>
            JSON.stringify(functionsDashboardBody({ region, functionNames, shardQueueName, deadLetterQueueName })),
          ),
      },
      { parent: this },
    );
    this.limitsDashboard = new aws.cloudwatch.Dashboard(
      `${name}-limits`,
      {
        dashboardName: args.dashboardNames.limits,
        dashboardBody: region.apply((region) =>
          JSON.stringify(limitsDashboardBody({ region, namespace: args.namespace, refusalsAlarm: args.refusalsAlarm })),
        ),
      },
      { parent: this },
    );
    const consoleUrl = (dashboard: aws.cloudwatch.Dashboard) =>
      pulumi.interpolate`https://${region}.console.aws.amazon.com/cloudwatch/home?region=${region}#dashboards/dashboard/${dashboard.dashboardName}`;
    this.url = consoleUrl(this.dashboard);
    this.functionsUrl = consoleUrl(this.functionsDashboard);
    this.limitsUrl = consoleUrl(this.limitsDashboard);
    this.registerOutputs({ url: this.url, functionsUrl: this.functionsUrl, limitsUrl: this.limitsUrl });
  }
}
