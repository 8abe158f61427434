// The functions: container images, one least-privilege role each, JSON logs at the stage's level
// into a log group with retention (Lambda's own START/END/REPORT lines included), active tracing.
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { ENV, SHARDS } from "../names";

/** What each function may do: least privilege, by what its code calls. */
export interface Permissions {
  /** DynamoDB actions on the connections table. */
  dynamodb: string[];
  /** HTTP methods on `@connections/*` (POST: post to a connection, GET: describe it). */
  connections: ("POST" | "GET")[];
  /** events:PutEvents on the bus. */
  putEvents: boolean;
  /** SQS actions on the shard queue. */
  sqs: string[];
}

/** What the worker does with its queue: receive, delete, report failures and extend a job's
 * visibility (the event source mapping, under the worker's role), and hand on the rest of a
 * segment it could not finish before its deadline. */
const SHARD_WORKER_SQS = [
  "sqs:ReceiveMessage",
  "sqs:DeleteMessage",
  "sqs:GetQueueAttributes",
  "sqs:ChangeMessageVisibility",
  "sqs:SendMessage",
];

export const PERMISSIONS: Readonly<Record<string, Permissions>> = {
  connect: { dynamodb: ["dynamodb:PutItem"], connections: [], putEvents: true, sqs: [] },
  disconnect: { dynamodb: ["dynamodb:DeleteItem"], connections: [], putEvents: false, sqs: [] },
  default: { dynamodb: [], connections: ["POST"], putEvents: false, sqs: [] },
  // the sender's name, the first scan page, pruning of connections that answer 410; the table's
  // item count, to choose how many segments a large audience is split into, which it sends as
  // jobs to the shard queue
  broadcast: {
    dynamodb: ["dynamodb:GetItem", "dynamodb:Scan", "dynamodb:DeleteItem", "dynamodb:DescribeTable"],
    connections: ["POST"],
    putEvents: false,
    sqs: ["sqs:SendMessage"],
  },
  list: { dynamodb: ["dynamodb:Scan"], connections: ["POST"], putEvents: false, sqs: [] },
  chat: { dynamodb: ["dynamodb:GetItem", "dynamodb:DeleteItem"], connections: ["POST"], putEvents: false, sqs: [] },
  post: { dynamodb: [], connections: ["POST"], putEvents: false, sqs: [] },
  cleanup: { dynamodb: ["dynamodb:Scan", "dynamodb:DeleteItem"], connections: ["GET"], putEvents: false, sqs: [] },
  // its segment's scan, pruning, posting; its job from the queue, and the rest of it back there
  [SHARDS.function]: {
    dynamodb: ["dynamodb:Scan", "dynamodb:DeleteItem"],
    connections: ["POST"],
    putEvents: false,
    sqs: SHARD_WORKER_SQS,
  },
};

/** The functions that split broadcasts into shard jobs or deliver them: they get the queue's URL,
 * each invocation's share of the post rate budget, and the Scan page size. */
export const SHARDING: readonly string[] = ["broadcast", SHARDS.function];

export interface ShardingArgs {
  queueUrl: pulumi.Input<string>;
  queueArn: pulumi.Input<string>;
  /** `@connections` posts per second each invocation may make (POST_RATE). */
  postRate: number;
  /** Items a Scan page examines (SCAN_PAGE_SIZE). */
  scanPageSize: number;
  /** Worker invocations at once: the fewest segments a sharded broadcast gets (FANOUT_WORKERS). */
  workers: number;
  /** Receives of a job before the dead-letter queue (SHARD_ATTEMPTS): the queue's maxReceiveCount. */
  attempts: number;
}

/** Lambda's application log level for a stack whose log level is `level`: never less verbose
 * than INFO. The functions filter their own logs at `level` (LOG_LEVEL); Lambda treats a line
 * without a `level` key as INFO, and the metrics' EMF lines have none, so a WARN or ERROR filter
 * in Lambda would drop every metric. */
export function applicationLogLevel(level: string): string {
  return ["trace", "debug"].includes(level) ? level.toUpperCase() : "INFO";
}

export interface FunctionsArgs {
  prefix: string;
  functions: readonly string[];
  /** Image URI per function, in a form Lambda accepts (`repo@sha256:…`). */
  images: Record<string, pulumi.Input<string>>;
  tableName: pulumi.Input<string>;
  tableArn: pulumi.Input<string>;
  busName: pulumi.Input<string>;
  busArn: pulumi.Input<string>;
  managementEndpoint: pulumi.Input<string>;
  /** `arn:aws:execute-api:{region}:{account}:{api-id}/{stage}` */
  stageArn: pulumi.Input<string>;
  logLevel: string;
  memory: number;
  timeout: number;
  /** Timeouts of functions that do not run for `timeout` seconds. */
  timeouts: Record<string, number>;
  architecture: "arm64" | "x86_64";
  logRetentionDays: number;
  fanoutConcurrency: number;
  /** The CloudWatch namespace of the metrics the functions log (METRICS_NAMESPACE). */
  metricsNamespace: string;
  sharding: ShardingArgs;
}

/** The IAM policy document of one function: only what its code calls, on exactly its resources. */
export function policyDocument(
  fn: string,
  resources: { tableArn: string; busArn: string; stageArn: string; logGroupArn: string; queueArn: string },
): object {
  const permissions = PERMISSIONS[fn];
  if (!permissions) throw new Error(`no permissions declared for ${fn}`);
  const statements: object[] = [
    { Effect: "Allow", Action: ["logs:CreateLogStream", "logs:PutLogEvents"], Resource: `${resources.logGroupArn}:*` },
    // X-Ray accepts no resource narrower than "*" for these.
    { Effect: "Allow", Action: ["xray:PutTraceSegments", "xray:PutTelemetryRecords"], Resource: "*" },
  ];
  if (permissions.dynamodb.length > 0) {
    statements.push({ Effect: "Allow", Action: permissions.dynamodb, Resource: resources.tableArn });
  }
  if (permissions.putEvents) {
    statements.push({ Effect: "Allow", Action: ["events:PutEvents"], Resource: resources.busArn });
  }
  if (permissions.connections.length > 0) {
    statements.push({
      Effect: "Allow",
      Action: ["execute-api:ManageConnections"],
      Resource: permissions.connections.map((method) => `${resources.stageArn}/${method}/@connections/*`),
    });
  }
  if (permissions.sqs.length > 0) {
    statements.push({ Effect: "Allow", Action: permissions.sqs, Resource: resources.queueArn });
  }
  return { Version: "2012-10-17", Statement: statements };
}

export class Functions extends pulumi.ComponentResource {
  public readonly functions: Record<string, aws.lambda.Function> = {};

  constructor(name: string, args: FunctionsArgs, opts?: pulumi.ComponentResourceOptions) {
    super("webchat:index:Functions", name, {}, opts);
    for (const fn of args.functions) {
      const functionName = `${args.prefix}-${fn}`;
      const logGroup = new aws.cloudwatch.LogGroup(
        `${name}-${fn}`,
        { name: `/aws/lambda/${functionName}`, retentionInDays: args.logRetentionDays },
        { parent: this },
      );
      const role = new aws.iam.Role(
        `${name}-${fn}`,
        {
          assumeRolePolicy: JSON.stringify({
            Version: "2012-10-17",
            Statement: [{ Effect: "Allow", Principal: { Service: "lambda.amazonaws.com" }, Action: "sts:AssumeRole" }],
          }),
        },
        { parent: this },
      );
      const policy = new aws.iam.RolePolicy(
        `${name}-${fn}`,
        {
          role: role.id,
          policy: pulumi
            .all([args.tableArn, args.busArn, args.stageArn, logGroup.arn, args.sharding.queueArn])
            .apply(([tableArn, busArn, stageArn, logGroupArn, queueArn]) =>
              JSON.stringify(policyDocument(fn, { tableArn, busArn, stageArn, logGroupArn, queueArn })),
            ),
        },
        { parent: this },
      );
      this.functions[fn] = new aws.lambda.Function(
        `${name}-${fn}`,
        {
          name: functionName,
          packageType: "Image",
          imageUri: args.images[fn],
          role: role.arn,
          architectures: [args.architecture],
          memorySize: args.memory,
          timeout: args.timeouts[fn] ?? args.timeout,
          tracingConfig: { mode: "Active" },
          loggingConfig: {
            logFormat: "JSON",
            logGroup: logGroup.name,
            applicationLogLevel: applicationLogLevel(args.logLevel),
            // INFO keeps Lambda's START/END/REPORT lines: duration, init duration, memory.
            systemLogLevel: "INFO",
          },
          environment: {
            variables: {
              [ENV.table]: args.tableName,
              [ENV.eventBus]: args.busName,
              [ENV.managementEndpoint]: args.managementEndpoint,
              [ENV.logLevel]: args.logLevel,
              [ENV.fanoutConcurrency]: String(args.fanoutConcurrency),
              [ENV.metricsNamespace]: args.metricsNamespace,
              ...(SHARDING.includes(fn)
                ? {
                    [ENV.shardQueue]: args.sharding.queueUrl,
                    [ENV.postRate]: String(args.sharding.postRate),
                    [ENV.scanPageSize]: String(args.sharding.scanPageSize),
                    [ENV.fanoutWorkers]: String(args.sharding.workers),
                    [ENV.shardAttempts]: String(args.sharding.attempts),
                  }
                : {}),
            },
          },
        },
        { parent: this, dependsOn: [policy, logGroup] },
      );
    }
    this.registerOutputs({});
  }
}
