// Stack settings, from the stack's config file (Pulumi.<stack>.yaml), with defaults.
import * as pulumi from "@pulumi/pulumi";

export interface Settings {
  /** Stack name, part of every resource name. */
  stack: string;
  /** Require SigV4-signed (IAM) connect requests. */
  iamAuth: boolean;
  /** Sign-in on `$connect` with tokens of an OpenID Connect issuer of the stage's choosing: the
   * tokens' `iss`, exactly, and their `aud` (or an access token's `client_id`). */
  jwt?: { issuer: string; audience: string };
  /** Sign-in with a Cognito user pool and app client that the stack creates. */
  cognito: boolean;
  /** LOG_LEVEL of the functions; Lambda's application log level follows it down to TRACE but
   * never above INFO (the metrics' EMF lines have no level: INFO to Lambda). */
  logLevel: "trace" | "debug" | "info" | "warn" | "error";
  /** Function memory in MB (CPU scales with it: fan-out signs faster with more). */
  memory: number;
  /** Function timeout in seconds. */
  timeout: number;
  architecture: "arm64" | "x86_64";
  /** EventBridge Scheduler expression for cleanup. */
  cleanupSchedule: string;
  /** Stage throttling: steady requests per second, and burst. */
  throttlingRateLimit: number;
  throttlingBurstLimit: number;
  /** Retention of every log group, in days. */
  logRetentionDays: number;
  /** `@connections` calls a fan-out keeps in flight (FANOUT_CONCURRENCY). */
  fanoutConcurrency: number;
  /** `@connections` posts per second that every fan-out together may make. */
  postRateBudget: number;
  /** `fanout` invocations at once: the SQS event source mapping's maximum concurrency. */
  fanoutWorkers: number;
  /** The `fanout` worker's timeout in seconds. */
  fanoutTimeout: number;
  /** Items a Scan page examines (SCAN_PAGE_SIZE): larger audiences are sharded. */
  scanPageSize: number;
  /** Days a room's messages are kept for `history` and a join's catch-up (HISTORY_DAYS). */
  historyDays: number;
  /** Rooms of at most this many members send presence frames when one joins or leaves
   * (PRESENCE_LIMIT); 0, none. */
  presenceLimit: number;
  /** Frames a second each connection may send (FRAME_RATE); 0, no frame limit. */
  frameRate: number;
  /** Frames a connection may send at once, within its frame rate (FRAME_BURST). */
  frameBurst: number;
  /** Frames a second a signed-in user may send across their connections, in bursts of twice as
   * many (USER_FRAME_RATE); 0, no limit per user. */
  userFrameRate: number;
  /** Deliveries a minute each connection's broadcasts may address, all at once at most
   * (DELIVERY_BUDGET); 0, no limit. */
  deliveryBudget: number;
  /** Connections one signed-in user may hold at once (CONNECTIONS_PER_USER); 0, no limit. */
  connectionsPerUser: number;
  /** Whether a broadcast may address everyone (EVERYONE_BROADCAST); if not, only rooms. */
  everyoneBroadcast: boolean;
  /** The ADOT collector Lambda layer version whose extension is baked into each image. */
  adotLayerArn: string;
  /** JSON access logs on the stage (needs API Gateway's CloudWatch role on the account). */
  accessLogs: boolean;
  /** Let the stack set that role on the account: a region-wide setting (see components/api.ts). */
  manageApiGatewayAccount: boolean;
  /** The AWS provider's profile and keys, for the program's own AWS call (the layer lookup). */
  aws: {
    profile?: string;
    accessKey?: pulumi.Output<string>;
    secretKey?: pulumi.Output<string>;
    token?: pulumi.Output<string>;
  };
}

export const DEFAULTS = {
  iamAuth: false,
  cognito: false,
  logLevel: "info",
  memory: 512,
  timeout: 10,
  architecture: "arm64",
  cleanupSchedule: "rate(5 minutes)",
  throttlingRateLimit: 500,
  throttlingBurstLimit: 1000,
  logRetentionDays: 14,
  fanoutConcurrency: 512,
  // API Gateway's account throttle is 10,000 requests/s (burst 5,000), shared with the clients'
  // own messages: the fan-outs stay below it.
  postRateBudget: 8000,
  fanoutWorkers: 8,
  fanoutTimeout: 60,
  scanPageSize: 1000,
  historyDays: 7,
  presenceLimit: 100,
  // the per-client limits (issue 23): a person chatting stays far within them
  frameRate: 10,
  frameBurst: 20,
  userFrameRate: 20,
  deliveryBudget: 10000,
  connectionsPerUser: 10,
  everyoneBroadcast: true,
  accessLogs: false,
  manageApiGatewayAccount: false,
} as const;

/**
 * AWS's ADOT collector layer 0.117.0 for an architecture, in a region. AWS (account 901920570463)
 * publishes it in 16 regions only; elsewhere, webchat:adotLayerArn names one in another region.
 */
export function defaultAdotLayerArn(region: string, architecture: string): string {
  const arch = architecture === "arm64" ? "arm64" : "amd64";
  return `arn:aws:lambda:${region}:901920570463:layer:aws-otel-collector-${arch}-ver-0-117-0:1`;
}

/** An integer setting `webchat:<key>` from `min` to `max` (inclusive), or its default. */
function integerSetting(config: pulumi.Config, key: string, fallback: number, min: number, max: number, why: string): number {
  const value = config.getNumber(key) ?? fallback;
  if (!Number.isInteger(value) || value < min || value > max) {
    const range = max === Infinity ? `at least ${min}` : `from ${min} to ${max}`;
    throw new Error(`webchat:${key} must be a whole number ${range} (${why}), not ${value}`);
  }
  return value;
}

/**
 * A boolean setting `webchat:<key>`, `true` or `false`, or its default. Checked here rather than by
 * Config.getBoolean, whose error (a RunError) keeps the program under Pulumi's language host
 * alive for half a minute before it exits (test/language-host.test.ts), where a plain Error stops
 * it at once, and so that the message reads as the other settings' do.
 */
function booleanSetting(config: pulumi.Config, key: string, fallback: boolean, why: string): boolean {
  const value = config.get(key);
  if (value === undefined) return fallback;
  if (value !== "true" && value !== "false") {
    throw new Error(`webchat:${key} must be true or false (${why}), not ${value}`);
  }
  return value === "true";
}

/**
 * `webchat:jwtIssuer` and `webchat:jwtAudience` (both, or neither), checked as the authorizer will
 * use them: the issuer is an https:// URL with no query or fragment (OpenID Connect Discovery's
 * rule for an issuer), since the authorizer fetches `<issuer>/.well-known/openid-configuration`
 * from Lambda, where no loopback issuer can answer.
 */
function jwtSetting(config: pulumi.Config): Settings["jwt"] {
  const issuer = config.get("jwtIssuer");
  const audience = config.get("jwtAudience");
  if (issuer === undefined && audience === undefined) return undefined;
  if (!issuer || !audience) {
    throw new Error(
      "webchat:jwtIssuer and webchat:jwtAudience go together: the issuer's URL (the tokens' iss) and " +
        "the audience (their aud, or an access token's client_id). Set both, or neither",
    );
  }
  let url: URL | undefined;
  try {
    url = new URL(issuer);
  } catch {
    url = undefined;
  }
  if (!url || url.protocol !== "https:" || /[?#]/.test(issuer)) {
    throw new Error(
      `webchat:jwtIssuer must be an https:// URL without query or fragment, exactly the tokens' iss ` +
        `(e.g. https://cognito-idp.<region>.amazonaws.com/<poolId>), not ${issuer}`,
    );
  }
  return { issuer, audience };
}

export function loadSettings(): Settings {
  const config = new pulumi.Config("webchat");
  const aws = new pulumi.Config("aws");
  const region = aws.require("region");
  const architecture = (config.get("architecture") ?? DEFAULTS.architecture) as Settings["architecture"];
  if (architecture !== "arm64" && architecture !== "x86_64") {
    throw new Error(`webchat:architecture must be arm64 or x86_64, not ${architecture}`);
  }
  const logLevel = (config.get("logLevel") ?? DEFAULTS.logLevel) as Settings["logLevel"];
  if (!["trace", "debug", "info", "warn", "error"].includes(logLevel)) {
    throw new Error(`webchat:logLevel must be trace, debug, info, warn or error, not ${logLevel}`);
  }
  const accessLogs = config.getBoolean("accessLogs") ?? DEFAULTS.accessLogs;
  const manageApiGatewayAccount = config.getBoolean("manageApiGatewayAccount") ?? DEFAULTS.manageApiGatewayAccount;
  if (manageApiGatewayAccount && !accessLogs) {
    throw new Error("webchat:manageApiGatewayAccount only serves webchat:accessLogs: set both, or neither");
  }
  const fanoutWorkers = integerSetting(
    config, "fanoutWorkers", DEFAULTS.fanoutWorkers, 2, 1000,
    "the bounds of an SQS event source mapping's maximum concurrency",
  );
  const fanoutTimeout = integerSetting(config, "fanoutTimeout", DEFAULTS.fanoutTimeout, 1, 900, "a Lambda timeout in seconds");
  // every worker gets an equal share, of at least one post a second
  const postRateBudget = integerSetting(
    config, "postRateBudget", DEFAULTS.postRateBudget, fanoutWorkers, Infinity,
    `@connections posts per second, shared by webchat:fanoutWorkers (${fanoutWorkers}) workers, at least one each`,
  );
  const scanPageSize = integerSetting(config, "scanPageSize", DEFAULTS.scanPageSize, 1, Infinity, "items a DynamoDB Scan page examines");
  // the functions' own bounds (src/config.rs): a value outside them would stop every function at start
  const historyDays = integerSetting(config, "historyDays", DEFAULTS.historyDays, 1, 365, "days a room's messages are kept");
  const presenceLimit = integerSetting(
    config, "presenceLimit", DEFAULTS.presenceLimit, 0, 10000,
    "the most members a room may have and still send presence frames; 0 for none",
  );
  // the limits, within the functions' bounds too; 0 turns a limit off (but a burst, which only
  // shapes a frame rate, is at least one frame)
  const frameRate = integerSetting(config, "frameRate", DEFAULTS.frameRate, 0, 1000, "frames a second per connection; 0 for no limit");
  const frameBurst = integerSetting(config, "frameBurst", DEFAULTS.frameBurst, 1, 10000, "frames a connection may send at once");
  const userFrameRate = integerSetting(
    config, "userFrameRate", DEFAULTS.userFrameRate, 0, 10000,
    "frames a second per signed-in user, across their connections; 0 for no limit",
  );
  const deliveryBudget = integerSetting(
    config, "deliveryBudget", DEFAULTS.deliveryBudget, 0, 10_000_000,
    "deliveries a minute per connection, a broadcast costing its audience; 0 for no limit",
  );
  const connectionsPerUser = integerSetting(
    config, "connectionsPerUser", DEFAULTS.connectionsPerUser, 0, 1000,
    "connections one signed-in user may hold at once; 0 for no limit",
  );
  const everyoneBroadcast = booleanSetting(config, "everyoneBroadcast", DEFAULTS.everyoneBroadcast, "whether a broadcast may address everyone");
  const cognito = config.getBoolean("cognito") ?? DEFAULTS.cognito;
  if (cognito && (config.get("jwtIssuer") !== undefined || config.get("jwtAudience") !== undefined)) {
    throw new Error(
      "webchat:cognito makes the stack's own issuer and audience (a user pool and its app client): " +
        "unset webchat:jwtIssuer and webchat:jwtAudience, or set webchat:cognito to false",
    );
  }
  const jwt = jwtSetting(config);
  const iamAuth = config.getBoolean("iamAuth") ?? DEFAULTS.iamAuth;
  // $connect has one authorization type: AWS_IAM, or CUSTOM with the sign-in authorizer
  if (iamAuth && (jwt || cognito)) {
    throw new Error(
      `webchat:iamAuth and sign-in (webchat:${cognito ? "cognito" : "jwtIssuer/jwtAudience"}) exclude each other: ` +
        "$connect takes either SigV4 (AWS_IAM) or the token authorizer, not both. Set one of them",
    );
  }
  return {
    stack: pulumi.getStack(),
    iamAuth,
    jwt,
    cognito,
    logLevel,
    memory: config.getNumber("memory") ?? DEFAULTS.memory,
    timeout: config.getNumber("timeout") ?? DEFAULTS.timeout,
    architecture,
    cleanupSchedule: config.get("cleanupSchedule") ?? DEFAULTS.cleanupSchedule,
    throttlingRateLimit: config.getNumber("throttlingRateLimit") ?? DEFAULTS.throttlingRateLimit,
    throttlingBurstLimit: config.getNumber("throttlingBurstLimit") ?? DEFAULTS.throttlingBurstLimit,
    logRetentionDays: config.getNumber("logRetentionDays") ?? DEFAULTS.logRetentionDays,
    fanoutConcurrency: config.getNumber("fanoutConcurrency") ?? DEFAULTS.fanoutConcurrency,
    postRateBudget,
    fanoutWorkers,
    fanoutTimeout,
    scanPageSize,
    historyDays,
    presenceLimit,
    frameRate,
    frameBurst,
    userFrameRate,
    deliveryBudget,
    connectionsPerUser,
    everyoneBroadcast,
    adotLayerArn: config.get("adotLayerArn") ?? defaultAdotLayerArn(region, architecture),
    accessLogs,
    manageApiGatewayAccount,
    aws: {
      profile: aws.get("profile"),
      accessKey: aws.getSecret("accessKey"),
      secretKey: aws.getSecret("secretKey"),
      token: aws.getSecret("token"),
    },
  };
}
