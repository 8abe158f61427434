// Pulumi's mocks, for the unit tests, the language-host test and the offline synth: every
// resource registration is recorded with its inputs and given the outputs its provider computes,
// in the provider's own forms, so that what the program derives from them (image URIs, the
// management endpoint, policy ARNs) is what it would derive in AWS. No CLI, no credentials, no
// network. The forms, and where they come from:
// - docker-build Image: `digest` is BuildKit's `sha256:<hex>`, the id is the digest, and `ref` is
//   `<first tag>@<digest>` (pulumi-docker-build provider/internal/image.go, addDigest).
// - apigatewayv2 Api: a 10-character id, `apiEndpoint` `wss://{id}.execute-api.{region}.amazonaws.com`,
//   `executionArn` `arn:aws:execute-api:{region}:{account}:{id}`; Stage: `invokeUrl`
//   `{apiEndpoint}/{stage}`, `executionArn` `{api executionArn}/{stage}` (the provider's docs).
// - lambda EventSourceMapping: the id is the mapping's UUID (`uuid`), `arn`
//   `arn:aws:lambda:{region}:{account}:event-source-mapping:{uuid}`, `functionArn` the function's
//   ARN, `state` `Enabled`; cloudwatch Dashboard: the id is `dashboardName`, `dashboardArn`
//   `arn:aws:cloudwatch::{account}:dashboard/{name}` (no region: dashboards are global);
//   cloudwatch MetricAlarm: the id is its `name` (the provider's docs: it is imported by the
//   alarm's name), `arn` `arn:aws:cloudwatch:{region}:{account}:alarm:{name}`.
// - apigatewayv2 Authorizer: a 7-character id (`aabbccddee/1122334` imports API and authorizer),
//   no ARN; cognito UserPool: the id is `{region}_{9 letters and digits}`, `arn`
//   `arn:aws:cognito-idp:{region}:{account}:userpool/{id}`, `endpoint`
//   `cognito-idp.{region}.amazonaws.com/{id}` (the Terraform provider's read: the regional
//   hostname, a slash, the id); UserPoolClient: the id is the client id, 26 lower-case letters
//   and digits, `clientSecret` empty without generateSecret, no ARN (the provider's docs).
// - Auto-named resources get the logical name and a 7-character suffix, as Pulumi's auto-naming.
import * as pulumi from "@pulumi/pulumi";
import { createHash } from "crypto";
import * as fs from "fs";
import * as path from "path";
import { parse } from "yaml";

export interface Recorded {
  type: string;
  name: string;
  /** The id the (mock) provider gave it. */
  id: string;
  inputs: Record<string, any>;
}

export const ACCOUNT = "123456789012";
/** Where a test or the synth stands in for the ADOT layer zip's SHA-256 (adot.ts looks it up). */
export const PLACEHOLDER_LAYER_SHA256 = "0".repeat(64);

/** A deterministic stand-in for an id or suffix AWS or Pulumi would generate. */
function generated(seed: string, length: number, alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"): string {
  const digest = createHash("sha256").update(seed).digest();
  return Array.from(digest.subarray(0, length), (byte) => alphabet[byte % alphabet.length]).join("");
}

function computed(type: string, name: string, inputs: Record<string, any>, region: string): { id: string; state: Record<string, any> } {
  if (type === "docker-build:index:Image") {
    // the same inputs build the same image: the digest is a function of them, but not of the
    // registry passwords, which docker-build's Diff ignores (a fresh ECR token rebuilds nothing)
    const registries = inputs.registries?.map(({ password, ...registry }: Record<string, any>) => registry);
    const digest = `sha256:${createHash("sha256").update(JSON.stringify({ ...inputs, registries })).digest("hex")}`;
    return { id: digest, state: { digest, ref: `${inputs.tags?.[0] ?? name}@${digest}` } };
  }
  const service = type.split(":")[1]?.split("/")[0] ?? "unknown";
  const physical = inputs.name ?? `${name}-${generated(`${type}::${name}`, 7, "0123456789abcdef")}`;
  const out: Record<string, any> = { name: physical, arn: `arn:aws:${service}:${region}:${ACCOUNT}:${physical}` };
  let id = physical;
  switch (type) {
    case "aws:lambda/function:Function":
      out.arn = `arn:aws:lambda:${region}:${ACCOUNT}:function:${physical}`;
      out.invokeArn = `arn:aws:apigateway:${region}:lambda:path/2015-03-31/functions/${out.arn}/invocations`;
      break;
    case "aws:apigatewayv2/api:Api":
      id = generated(`api::${name}`, 10);
      out.apiEndpoint = `${inputs.protocolType === "WEBSOCKET" ? "wss" : "https"}://${id}.execute-api.${region}.amazonaws.com`;
      out.executionArn = `arn:aws:execute-api:${region}:${ACCOUNT}:${id}`;
      out.arn = `arn:aws:apigateway:${region}::/apis/${id}`;
      break;
    case "aws:apigatewayv2/stage:Stage":
      out.invokeUrl = `wss://${inputs.apiId}.execute-api.${region}.amazonaws.com/${inputs.name}`;
      out.executionArn = `arn:aws:execute-api:${region}:${ACCOUNT}:${inputs.apiId}/${inputs.name}`;
      break;
    case "aws:apigatewayv2/integration:Integration":
    case "aws:apigatewayv2/route:Route":
      id = generated(`${type}::${name}`, 7);
      break;
    case "aws:apigatewayv2/authorizer:Authorizer":
      id = generated(`${type}::${name}`, 7);
      delete out.arn;
      break;
    case "aws:cognito/userPool:UserPool":
      id = `${region}_${generated(`${type}::${name}`, 9, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")}`;
      out.arn = `arn:aws:cognito-idp:${region}:${ACCOUNT}:userpool/${id}`;
      out.endpoint = `cognito-idp.${region}.amazonaws.com/${id}`;
      break;
    case "aws:cognito/userPoolClient:UserPoolClient":
      id = generated(`${type}::${name}`, 26);
      delete out.arn;
      out.clientSecret = inputs.generateSecret ? generated(`secret::${name}`, 51) : "";
      break;
    case "aws:dynamodb/table:Table":
      out.arn = `arn:aws:dynamodb:${region}:${ACCOUNT}:table/${physical}`;
      break;
    case "aws:cloudwatch/eventBus:EventBus":
      out.arn = `arn:aws:events:${region}:${ACCOUNT}:event-bus/${physical}`;
      break;
    case "aws:cloudwatch/eventRule:EventRule":
      out.arn = `arn:aws:events:${region}:${ACCOUNT}:rule/${inputs.eventBusName}/${physical}`;
      break;
    case "aws:cloudwatch/logGroup:LogGroup":
      out.arn = `arn:aws:logs:${region}:${ACCOUNT}:log-group:${physical}`;
      break;
    case "aws:iam/role:Role":
      out.arn = `arn:aws:iam::${ACCOUNT}:role/${physical}`;
      break;
    case "aws:ecr/repository:Repository":
      out.repositoryUrl = `${ACCOUNT}.dkr.ecr.${region}.amazonaws.com/${physical}`;
      out.registryId = ACCOUNT;
      break;
    case "aws:lambda/eventSourceMapping:EventSourceMapping": {
      const hex = createHash("sha256").update(`${type}::${name}`).digest("hex");
      id = `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-a${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
      delete out.name;
      out.uuid = id;
      out.arn = `arn:aws:lambda:${region}:${ACCOUNT}:event-source-mapping:${id}`;
      const fn = String(inputs.functionName ?? "");
      out.functionArn = fn.startsWith("arn:") ? fn : `arn:aws:lambda:${region}:${ACCOUNT}:function:${fn}`;
      out.state = "Enabled";
      break;
    }
    case "aws:cloudwatch/dashboard:Dashboard":
      id = inputs.dashboardName;
      delete out.name;
      delete out.arn;
      out.dashboardArn = `arn:aws:cloudwatch::${ACCOUNT}:dashboard/${inputs.dashboardName}`;
      break;
    case "aws:cloudwatch/metricAlarm:MetricAlarm":
      out.arn = `arn:aws:cloudwatch:${region}:${ACCOUNT}:alarm:${physical}`;
      break;
    case "aws:sqs/queue:Queue":
      out.url = `https://sqs.${region}.amazonaws.com/${ACCOUNT}/${physical}`;
      out.arn = `arn:aws:sqs:${region}:${ACCOUNT}:${physical}`;
      break;
  }
  return { id, state: out };
}

/** What the program's provider functions (invokes) answer, in the providers' own shapes. */
function called(token: string, inputs: Record<string, any>, region: string, ecrPassword: string): Record<string, any> {
  switch (token) {
    case "aws:index/getRegion:getRegion":
      return { id: region, name: region, region, endpoint: `ec2.${region}.amazonaws.com`, description: region };
    case "aws:index/getCallerIdentity:getCallerIdentity":
      return { id: ACCOUNT, accountId: ACCOUNT, arn: `arn:aws:iam::${ACCOUNT}:user/deployer`, userId: "AIDAEXAMPLEUSERID" };
    case "aws:index/getPartition:getPartition":
      return { id: "aws", partition: "aws", dnsSuffix: "amazonaws.com", reverseDnsPrefix: "com.amazonaws" };
    case "aws:ecr/getAuthorizationToken:getAuthorizationToken":
      return {
        id: region,
        registryId: inputs.registryId ?? ACCOUNT,
        userName: "AWS",
        password: ecrPassword,
        authorizationToken: Buffer.from(`AWS:${ecrPassword}`).toString("base64"),
        proxyEndpoint: `https://${ACCOUNT}.dkr.ecr.${region}.amazonaws.com`,
        expiresAt: "2026-11-29T04:00:00Z",
      };
    default:
      // an invoke nobody taught the mocks is a mistake to see, not an empty answer to guess from
      throw new Error(`the mocks do not know the invoke ${token}`);
  }
}

/** Pulumi's mocks, recording every registration into `recorded`; ECR hands out `ecrPassword`. */
export function mocksFor(recorded: Recorded[], region: string, ecrPassword = "mock-ecr-token"): pulumi.runtime.Mocks {
  return {
    newResource(args) {
      const { id, state } = computed(args.type, args.name, args.inputs, region);
      recorded.push({ type: args.type, name: args.name, id, inputs: args.inputs });
      return { id, state: { ...state, ...args.inputs } };
    },
    call(args) {
      return called(args.token, args.inputs, region, ecrPassword);
    },
  };
}

/** A stack's config from Pulumi.<stack>.yaml at the repository root, as the CLI hands it to a
 * program: every value a string (objects as JSON), keyed `<namespace>:<name>`. */
export function stackConfig(stack: string): Record<string, string> {
  const file = path.resolve(__dirname, "..", `Pulumi.${stack}.yaml`);
  const config: Record<string, string> = {};
  for (const [key, v] of Object.entries(parse(fs.readFileSync(file, "utf8"))?.config ?? {})) {
    config[key] = typeof v === "string" ? v : JSON.stringify(v);
  }
  return config;
}

/** Installs mocks and `config` (keys like `webchat:iamAuth`); returns the live record. */
export function installMocks(config: Record<string, string>, stack = "stage"): Recorded[] {
  const recorded: Recorded[] = [];
  const region = config["aws:region"] ?? "eu-west-1";
  pulumi.runtime.setAllConfig({ "aws:region": region, ...config });
  pulumi.runtime.setMocks(mocksFor(recorded, region), "webchat", stack, false);
  return recorded;
}

/** Resolves an output (under mocks). */
export function value<T>(output: pulumi.Output<T>): Promise<T> {
  return new Promise((resolve) => output.apply((v) => resolve(v)));
}

/** Waits until no resource has been registered for a moment: the program is fully evaluated. */
export async function settled(recorded: Recorded[]): Promise<void> {
  let count = -1;
  while (count !== recorded.length) {
    count = recorded.length;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
