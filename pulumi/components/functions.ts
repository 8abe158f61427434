// The functions: container images, one least-privilege role each, JSON logs at the stage's level
// into a log group with retention (Lambda's own START/END/REPORT lines included), active tracing.
// `imageFunction` is that recipe for one function; the authorizer (authorizer.ts) uses it too.
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { ENV, SHARDS, TABLE } from "../names";
import type { Settings } from "../settings";

/** An HTTP method on `@connections/*`: POST posts to a connection, GET describes it, DELETE
 * closes it. */
export type ConnectionsMethod = "POST" | "GET" | "DELETE";

/** What each function may do: least privilege, by what its code calls. */
export interface Permissions {
  /** DynamoDB actions on the connections table. */
  dynamodb: string[];
  /** DynamoDB actions on the table's user index (TABLE.userIndex), never on the table itself. */
  userIndex: string[];
  /** DynamoDB actions on the rooms table (a Query of its base table needs only the table's ARN). */
  rooms: string[];
  /** Whether it takes from the limits' buckets: UpdateItem on the rooms table's `limit#` items
   * (LIMIT_KEYS), and on those only where `rooms` has no UpdateItem of its own. */
  limitBuckets: boolean;
  /** HTTP methods on `@connections/*`. */
  connections: ConnectionsMethod[];
  /** events:PutEvents on the bus. */
  putEvents: boolean;
  /** SQS actions on the shard queue. */
  sqs: string[];
  /** What it may do besides on a stack with sign-in, where connections belong to users. */
  signIn?: Partial<Pick<Permissions, "dynamodb" | "userIndex" | "rooms" | "connections">>;
}

/** The limits' buckets (src/adapters/limits.rs): items of the rooms table whose partition key is
 * `limit#<key>`, each taken from by a conditional UpdateItem (its refusal returns the old item,
 * ReturnValuesOnConditionCheckFailure, which needs no read permission). */
export const LIMIT_KEYS = "limit#*";

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

/** What leaving a room takes on the rooms table (`leave`, and every room of a connection that
 * ended: `$disconnect`, a prune after 410, `cleanup`): delete the membership (its old item is the
 * member that left), count the room's members down, and read its other members for the presence
 * frames. On the connections table (each function's `dynamodb`), a connection that ended has its
 * rooms read from its record before the record is deleted (GetItem); only `leave` takes the room
 * out of the record's set (UpdateItem). The presence frames are `@connections` posts. */
const LEAVE_ROOMS = ["dynamodb:DeleteItem", "dynamodb:UpdateItem", "dynamodb:Query"];

/** What every message route's function does for the limits: each frame takes from its
 * connection's and its user's frame budgets (a broadcast from its delivery budget too), and a
 * connection that keeps sending past them, or a frame after its token's `exp` with sign-in, is
 * closed (DeleteConnection) after an error frame (POST). */
const MESSAGE_ROUTE: Pick<Permissions, "limitBuckets" | "connections"> = {
  limitBuckets: true,
  connections: ["POST", "DELETE"],
};

export const PERMISSIONS: Readonly<Record<string, Permissions>> = {
  // the record; with sign-in, a user at webchat:connectionsPerUser has their connections counted
  // by a Query of the user index, and each asked after (GET @connections) before the connect is
  // refused. A gone one is pruned as chat prunes: its record's rooms read, the record deleted,
  // its rooms left (presence frames to their other members). A connect the count allows takes
  // from the user's connects bucket (a `limit#` item: UpdateItem, which LEAVE_ROOMS grants)
  connect: {
    dynamodb: ["dynamodb:PutItem"],
    userIndex: [],
    rooms: [],
    limitBuckets: false,
    connections: [],
    putEvents: true,
    sqs: [],
    signIn: {
      dynamodb: ["dynamodb:GetItem", "dynamodb:DeleteItem"],
      userIndex: ["dynamodb:Query"],
      rooms: LEAVE_ROOMS,
      connections: ["GET", "POST"],
    },
  },
  // the record's rooms, each room left (presence frames to the others), then the record
  disconnect: {
    dynamodb: ["dynamodb:GetItem", "dynamodb:DeleteItem"],
    userIndex: [],
    rooms: LEAVE_ROOMS,
    limitBuckets: false,
    connections: ["POST"],
    putEvents: false,
    sqs: [],
  },
  default: { dynamodb: [], userIndex: [], rooms: [], ...MESSAGE_ROUTE, putEvents: false, sqs: [] },
  // the sender's name, the first scan page, pruning of connections that answer 410 (and the rooms
  // they leave); the table's item count, to choose how many segments a large audience is split
  // into, which it sends as jobs to the shard queue. To a room: the sender's membership, the
  // message numbered (the room's counter) and kept for history, the members by Query per shard
  broadcast: {
    dynamodb: ["dynamodb:GetItem", "dynamodb:Scan", "dynamodb:DeleteItem", "dynamodb:DescribeTable"],
    userIndex: [],
    rooms: ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:Query"],
    ...MESSAGE_ROUTE,
    putEvents: false,
    sqs: ["sqs:SendMessage"],
  },
  // everyone by Scan; a room's members by Query (anyone may list a room, as anyone may join it)
  list: {
    dynamodb: ["dynamodb:Scan"],
    userIndex: [],
    rooms: ["dynamodb:Query"],
    ...MESSAGE_ROUTE,
    putEvents: false,
    sqs: [],
  },
  // a message to a user reaches each of their connections, found by a Query of the user index; a
  // gone one is pruned and leaves its rooms
  chat: {
    dynamodb: ["dynamodb:GetItem", "dynamodb:DeleteItem"],
    userIndex: ["dynamodb:Query"],
    rooms: LEAVE_ROOMS,
    ...MESSAGE_ROUTE,
    putEvents: false,
    sqs: [],
  },
  // the sender's name; the room added to the record's set (the room limit is its condition); the
  // member written, the room's count, and with since the history since
  join: {
    dynamodb: ["dynamodb:GetItem", "dynamodb:UpdateItem"],
    userIndex: [],
    rooms: ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"],
    ...MESSAGE_ROUTE,
    putEvents: false,
    sqs: [],
  },
  leave: { dynamodb: ["dynamodb:UpdateItem"], userIndex: [], rooms: LEAVE_ROOMS, ...MESSAGE_ROUTE, putEvents: false, sqs: [] },
  // the sender's membership and a page of the room's messages: it reads rooms, never writes them
  // (its one write is to its limits' buckets)
  history: { dynamodb: [], userIndex: [], rooms: ["dynamodb:GetItem", "dynamodb:Query"], ...MESSAGE_ROUTE, putEvents: false, sqs: [] },
  post: { dynamodb: [], userIndex: [], rooms: [], limitBuckets: false, connections: ["POST"], putEvents: false, sqs: [] },
  // a Scan of every record, GET @connections/{id} of each live one; a record removed (expired or
  // gone) leaves its rooms, whose other members get presence frames (POST)
  cleanup: {
    dynamodb: ["dynamodb:Scan", "dynamodb:DeleteItem", "dynamodb:GetItem"],
    userIndex: [],
    rooms: LEAVE_ROOMS,
    limitBuckets: false,
    connections: ["GET", "POST"],
    putEvents: false,
    sqs: [],
  },
  // its segment's scan (or a room's membership shard, by Query), pruning, posting; its job from
  // the queue, and the rest of it back there
  [SHARDS.function]: {
    dynamodb: ["dynamodb:Scan", "dynamodb:DeleteItem", "dynamodb:GetItem"],
    userIndex: [],
    rooms: LEAVE_ROOMS,
    limitBuckets: false,
    connections: ["POST"],
    putEvents: false,
    sqs: SHARD_WORKER_SQS,
  },
};

/** What a function may do on a stack with or without sign-in: its permissions, and with sign-in
 * what they add. */
export function permissionsOf(fn: string, signIn: boolean): Omit<Permissions, "signIn"> {
  const declared = PERMISSIONS[fn];
  if (!declared) throw new Error(`no permissions declared for ${fn}`);
  const { signIn: added = {}, ...permissions } = declared;
  if (!signIn) return permissions;
  return {
    ...permissions,
    dynamodb: [...permissions.dynamodb, ...(added.dynamodb ?? [])],
    userIndex: [...permissions.userIndex, ...(added.userIndex ?? [])],
    rooms: [...permissions.rooms, ...(added.rooms ?? [])],
    connections: [...permissions.connections, ...(added.connections ?? [])],
  };
}

/** UpdateItem on the limits' buckets alone, for a function that writes nothing else of the rooms
 * table. `dynamodb:LeadingKeys` holds the partition keys a request touches: a multivalued key,
 * so it takes ForAllValues, which also holds for a request that carries none (the IAM guide,
 * "Multivalued context keys"), hence the Null condition too. An UpdateItem always carries its key. */
function limitBucketsStatement(roomsTableArn: string): object {
  return {
    Effect: "Allow",
    Action: ["dynamodb:UpdateItem"],
    Resource: roomsTableArn,
    Condition: {
      "ForAllValues:StringLike": { "dynamodb:LeadingKeys": [LIMIT_KEYS] },
      Null: { "dynamodb:LeadingKeys": "false" },
    },
  };
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

/** The rooms: every chat function gets the rooms table's name (ROOMS_TABLE, which they all
 * require), how long a room's messages are kept (HISTORY_DAYS) and the presence limit
 * (PRESENCE_LIMIT). */
export interface RoomsArgs {
  tableName: pulumi.Input<string>;
  tableArn: pulumi.Input<string>;
  /** Days a room's messages are kept (HISTORY_DAYS). */
  historyDays: number;
  /** The most members a room may have and still send presence frames (PRESENCE_LIMIT). */
  presenceLimit: number;
}

/** The per-client limits, which every chat function is told (each one reads them all at start,
 * as it does the rooms' settings): frames per connection (FRAME_RATE, FRAME_BURST) and per user
 * (USER_FRAME_RATE), deliveries per connection (DELIVERY_BUDGET), connections per user
 * (CONNECTIONS_PER_USER), and whether a broadcast may address everyone (EVERYONE_BROADCAST). */
export type LimitsArgs = Pick<
  Settings,
  "frameRate" | "frameBurst" | "userFrameRate" | "deliveryBudget" | "connectionsPerUser" | "everyoneBroadcast"
>;

/** The limits as the functions read them: whole numbers, and `true` or `false`. */
export function limitsEnvironment(limits: LimitsArgs): Record<string, string> {
  return {
    [ENV.frameRate]: String(limits.frameRate),
    [ENV.frameBurst]: String(limits.frameBurst),
    [ENV.userFrameRate]: String(limits.userFrameRate),
    [ENV.deliveryBudget]: String(limits.deliveryBudget),
    [ENV.connectionsPerUser]: String(limits.connectionsPerUser),
    [ENV.everyoneBroadcast]: limits.everyoneBroadcast ? "true" : "false",
  };
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
  /** Connections sign in with a token (JWT auth), and so belong to users: `connect` may count
   * a user's connections. */
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
  rooms: RoomsArgs;
  limits: LimitsArgs;
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
 * (with `signIn`, what connections that belong to users add). */
export function policyDocument(
  fn: string,
  resources: { tableArn: string; roomsTableArn: string; busArn: string; stageArn: string; logGroupArn: string; queueArn: string },
  signIn: boolean,
): object {
  const permissions = permissionsOf(fn, signIn);
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
  if (permissions.rooms.length > 0) {
    statements.push({ Effect: "Allow", Action: permissions.rooms, Resource: resources.roomsTableArn });
  }
  if (permissions.limitBuckets && !permissions.rooms.includes("dynamodb:UpdateItem")) {
    statements.push(limitBucketsStatement(resources.roomsTableArn));
  }
  if (permissions.putEvents) {
    statements.push({ Effect: "Allow", Action: ["events:PutEvents"], Resource: resources.busArn });
  }
  const methods = permissions.connections;
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
              .all([args.tableArn, args.rooms.tableArn, args.busArn, args.stageArn, logGroupArn, args.sharding.queueArn])
              .apply(([tableArn, roomsTableArn, busArn, stageArn, logGroupArn, queueArn]) =>
                JSON.stringify(
                  policyDocument(fn, { tableArn, roomsTableArn, busArn, stageArn, logGroupArn, queueArn }, args.signIn),
                ),
              ),
          environment: {
            [ENV.table]: args.tableName,
            [ENV.roomsTable]: args.rooms.tableName,
            [ENV.eventBus]: args.busName,
            [ENV.managementEndpoint]: args.managementEndpoint,
            [ENV.logLevel]: args.logLevel,
            [ENV.fanoutConcurrency]: String(args.fanoutConcurrency),
            [ENV.metricsNamespace]: args.metricsNamespace,
            [ENV.historyDays]: String(args.rooms.historyDays),
            [ENV.presenceLimit]: String(args.rooms.presenceLimit),
            ...limitsEnvironment(args.limits),
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
