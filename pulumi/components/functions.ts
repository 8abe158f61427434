// The functions: container images, one least-privilege role each, JSON logs at the stage's level
// into a log group with retention (Lambda's own START/END/REPORT lines included), active tracing.
// `imageFunction` is that recipe for one function; the authorizer (authorizer.ts) uses it too.
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { ENV, ROUTES, SHARDS, TABLE } from "../names";

/** An HTTP method on `@connections/*`: POST posts to a connection, GET describes it, DELETE
 * closes it. */
export type ConnectionsMethod = "POST" | "GET" | "DELETE";

/** What each function may do: least privilege, by what its code calls. */
export interface Permissions {
  /** DynamoDB actions on the connections table. */
  dynamodb: string[];
  /** DynamoDB actions on the table's user index (TABLE.userIndex), never on the table itself. */
  userIndex: string[];
  /** HTTP methods on `@connections/*`. */
  connections: ConnectionsMethod[];
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
  connect: { dynamodb: ["dynamodb:PutItem"], userIndex: [], connections: [], putEvents: true, sqs: [] },
  disconnect: { dynamodb: ["dynamodb:DeleteItem"], userIndex: [], connections: [], putEvents: false, sqs: [] },
  default: { dynamodb: [], userIndex: [], connections: ["POST"], putEvents: false, sqs: [] },
  // the sender's name, the first scan page, pruning of connections that answer 410; the table's
  // item count, to choose how many segments a large audience is split into, which it sends as
  // jobs to the shard queue
  broadcast: {
    dynamodb: ["dynamodb:GetItem", "dynamodb:Scan", "dynamodb:DeleteItem", "dynamodb:DescribeTable"],
    userIndex: [],
    connections: ["POST"],
    putEvents: false,
    sqs: ["sqs:SendMessage"],
  },
  list: { dynamodb: ["dynamodb:Scan"], userIndex: [], connections: ["POST"], putEvents: false, sqs: [] },
  // a message to a user reaches each of their connections, found by a Query of the user index
  chat: {
    dynamodb: ["dynamodb:GetItem", "dynamodb:DeleteItem"],
    userIndex: ["dynamodb:Query"],
    connections: ["POST"],
    putEvents: false,
    sqs: [],
  },
  post: { dynamodb: [], userIndex: [], connections: ["POST"], putEvents: false, sqs: [] },
  cleanup: { dynamodb: ["dynamodb:Scan", "dynamodb:DeleteItem"], userIndex: [], connections: ["GET"], putEvents: false, sqs: [] },
  // its segment's scan, pruning, posting; its job from the queue, and the rest of it back there
  [SHARDS.function]: {
    dynamodb: ["dynamodb:Scan", "dynamodb:DeleteItem"],
    userIndex: [],
    connections: ["POST"],
    putEvents: false,
    sqs: SHARD_WORKER_SQS,
  },
};

/** The functions of the routes that receive frames (every route but `$connect` and
 * `$disconnect`). With sign-in, a frame that arrives after the token's `exp` makes them close its
 * connection (DeleteConnection), so there, and only there, they may DELETE `@connections`. */
export const CLOSES_EXPIRED: readonly string[] = Object.entries(ROUTES)
  .filter(([routeKey]) => routeKey !== "$connect" && routeKey !== "$disconnect")
  .map(([, fn]) => fn);

/** The `@connections` methods a function may call: its own, and DELETE with sign-in if it serves
 * a message route. */
function connectionsMethods(fn: string, signIn: boolean): ConnectionsMethod[] {
  const methods = PERMISSIONS[fn]?.connections ?? [];
  return signIn && CLOSES_EXPIRED.includes(fn) ? [...methods, "DELETE"] : methods;
}

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
  /** Connections sign in with a token (JWT auth): the message routes may close expired ones. */
  signIn: boolean;
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

/** What every function may do: write its own log group, and send its traces. */
export function logStatements(logGroupArn: string): object[] {
  return [
    { Effect: "Allow", Action: ["logs:CreateLogStream", "logs:PutLogEvents"], Resource: `${logGroupArn}:*` },
    // X-Ray accepts no resource narrower than "*" for these.
    { Effect: "Allow", Action: ["xray:PutTraceSegments", "xray:PutTelemetryRecords"], Resource: "*" },
  ];
}

/** The IAM policy document of one function: only what its code calls, on exactly its resources
 * (with `signIn`, closing connections too, for the message routes' functions). */
export function policyDocument(
  fn: string,
  resources: { tableArn: string; busArn: string; stageArn: string; logGroupArn: string; queueArn: string },
  signIn: boolean,
): object {
  const permissions = PERMISSIONS[fn];
  if (!permissions) throw new Error(`no permissions declared for ${fn}`);
  const statements = logStatements(resources.logGroupArn);
  if (permissions.dynamodb.length > 0) {
    statements.push({ Effect: "Allow", Action: permissions.dynamodb, Resource: resources.tableArn });
  }
  if (permissions.userIndex.length > 0) {
    statements.push({
      Effect: "Allow",
      Action: permissions.userIndex,
      Resource: `${resources.tableArn}/index/${TABLE.userIndex.name}`,
    });
  }
  if (permissions.putEvents) {
    statements.push({ Effect: "Allow", Action: ["events:PutEvents"], Resource: resources.busArn });
  }
  const methods = connectionsMethods(fn, signIn);
  if (methods.length > 0) {
    statements.push({
      Effect: "Allow",
      Action: ["execute-api:ManageConnections"],
      Resource: methods.map((method) => `${resources.stageArn}/${method}/@connections/*`),
    });
  }
  if (permissions.sqs.length > 0) {
    statements.push({ Effect: "Allow", Action: permissions.sqs, Resource: resources.queueArn });
  }
  return { Version: "2012-10-17", Statement: statements };
}

export interface ImageFunctionArgs {
  /** The function's name in Lambda; its log group is `/aws/lambda/<functionName>`. */
  functionName: string;
  /** The image URI, in a form Lambda accepts (`repo@sha256:…`). */
  image: pulumi.Input<string>;
  /** The role's inline policy (JSON), given the ARN of the function's log group. */
  policy: (logGroupArn: pulumi.Output<string>) => pulumi.Input<string>;
  environment: Record<string, pulumi.Input<string>>;
  logLevel: string;
  memory: number;
  timeout: number;
  architecture: "arm64" | "x86_64";
  logRetentionDays: number;
}

/**
 * One function as every webchat function runs: from its image, with a role of its own that only
 * Lambda may assume and whose one inline policy is `policy`, active tracing, and JSON logs into a
 * log group with retention. Its log group, role, policy and function are all named `name`.
 */
export function imageFunction(name: string, args: ImageFunctionArgs, parent: pulumi.Resource): aws.lambda.Function {
  const logGroup = new aws.cloudwatch.LogGroup(
    name,
    { name: `/aws/lambda/${args.functionName}`, retentionInDays: args.logRetentionDays },
    { parent },
  );
  const role = new aws.iam.Role(
    name,
    {
      assumeRolePolicy: JSON.stringify({
        Version: "2012-10-17",
        Statement: [{ Effect: "Allow", Principal: { Service: "lambda.amazonaws.com" }, Action: "sts:AssumeRole" }],
      }),
    },
    { parent },
  );
  const policy = new aws.iam.RolePolicy(name, { role: role.id, policy: args.policy(logGroup.arn) }, { parent });
  return new aws.lambda.Function(
    name,
    {
      name: args.functionName,
      packageType: "Image",
      imageUri: args.image,
      role: role.arn,
      architectures: [args.architecture],
      memorySize: args.memory,
      timeout: args.timeout,
      tracingConfig: { mode: "Active" },
      loggingConfig: {
        logFormat: "JSON",
        logGroup: logGroup.name,
        applicationLogLevel: applicationLogLevel(args.logLevel),
        // INFO keeps Lambda's START/END/REPORT lines: duration, init duration, memory.
        systemLogLevel: "INFO",
      },
      environment: { variables: args.environment },
    },
    { parent, dependsOn: [policy, logGroup] },
  );
}

export class Functions extends pulumi.ComponentResource {
  public readonly functions: Record<string, aws.lambda.Function> = {};

  constructor(name: string, args: FunctionsArgs, opts?: pulumi.ComponentResourceOptions) {
    super("webchat:index:Functions", name, {}, opts);
    for (const fn of args.functions) {
      this.functions[fn] = imageFunction(
        `${name}-${fn}`,
        {
          functionName: `${args.prefix}-${fn}`,
          image: args.images[fn],
          policy: (logGroupArn) =>
            pulumi
              .all([args.tableArn, args.busArn, args.stageArn, logGroupArn, args.sharding.queueArn])
              .apply(([tableArn, busArn, stageArn, logGroupArn, queueArn]) =>
                JSON.stringify(policyDocument(fn, { tableArn, busArn, stageArn, logGroupArn, queueArn }, args.signIn)),
              ),
          environment: {
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
          logLevel: args.logLevel,
          memory: args.memory,
          timeout: args.timeouts[fn] ?? args.timeout,
          architecture: args.architecture,
          logRetentionDays: args.logRetentionDays,
        },
        this,
      );
    }
    this.registerOutputs({});
  }
}
