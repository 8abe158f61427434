// The eight functions: container images, one least-privilege role each, JSON logs at the stage's
// level into a log group with retention (Lambda's own START/END/REPORT lines included), active
// tracing.
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { ENV } from "../names";

/** What each function may do: least privilege, by what its code calls. */
export interface Permissions {
  /** DynamoDB actions on the connections table. */
  dynamodb: string[];
  /** HTTP methods on `@connections/*` (POST: post to a connection, GET: describe it). */
  connections: ("POST" | "GET")[];
  /** events:PutEvents on the bus. */
  putEvents: boolean;
}

export const PERMISSIONS: Readonly<Record<string, Permissions>> = {
  connect: { dynamodb: ["dynamodb:PutItem"], connections: [], putEvents: true },
  disconnect: { dynamodb: ["dynamodb:DeleteItem"], connections: [], putEvents: false },
  default: { dynamodb: [], connections: ["POST"], putEvents: false },
  // the sender's name, the scan, and pruning of connections that answer 410
  broadcast: { dynamodb: ["dynamodb:GetItem", "dynamodb:Scan", "dynamodb:DeleteItem"], connections: ["POST"], putEvents: false },
  list: { dynamodb: ["dynamodb:Scan"], connections: ["POST"], putEvents: false },
  chat: { dynamodb: ["dynamodb:GetItem", "dynamodb:DeleteItem"], connections: ["POST"], putEvents: false },
  post: { dynamodb: [], connections: ["POST"], putEvents: false },
  cleanup: { dynamodb: ["dynamodb:Scan", "dynamodb:DeleteItem"], connections: ["GET"], putEvents: false },
};

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
  architecture: "arm64" | "x86_64";
  logRetentionDays: number;
  fanoutConcurrency: number;
}

/** The IAM policy document of one function: only what its code calls, on exactly its resources. */
export function policyDocument(
  fn: string,
  resources: { tableArn: string; busArn: string; stageArn: string; logGroupArn: string },
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
            .all([args.tableArn, args.busArn, args.stageArn, logGroup.arn])
            .apply(([tableArn, busArn, stageArn, logGroupArn]) =>
              JSON.stringify(policyDocument(fn, { tableArn, busArn, stageArn, logGroupArn })),
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
          timeout: args.timeout,
          tracingConfig: { mode: "Active" },
          loggingConfig: {
            logFormat: "JSON",
            logGroup: logGroup.name,
            applicationLogLevel: args.logLevel.toUpperCase(),
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
            },
          },
        },
        { parent: this, dependsOn: [policy, logGroup] },
      );
    }
    this.registerOutputs({});
  }
}
