// Pulumi's mocks, for the unit tests and the offline synth: every resource registration is
// recorded with its inputs, and given the outputs AWS would compute (ARNs, URLs) so that the
// program's interpolations resolve. No CLI, no credentials, no network.
import * as pulumi from "@pulumi/pulumi";

export interface Recorded {
  type: string;
  name: string;
  inputs: Record<string, any>;
}

const ACCOUNT = "123456789012";

function computed(type: string, name: string, inputs: Record<string, any>, region: string): Record<string, any> {
  const service = type.split(":")[1]?.split("/")[0] ?? "unknown";
  const physical = inputs.name ?? `${name}-${"0123456".slice(0, 7)}`;
  const arn = `arn:aws:${service}:${region}:${ACCOUNT}:${physical}`;
  const out: Record<string, any> = { name: physical, arn };
  switch (type) {
    case "aws:lambda/function:Function":
      out.arn = `arn:aws:lambda:${region}:${ACCOUNT}:function:${physical}`;
      out.invokeArn = `arn:aws:apigateway:${region}:lambda:path/2015-03-31/functions/${out.arn}/invocations`;
      break;
    case "aws:apigatewayv2/api:Api":
      out.executionArn = `arn:aws:execute-api:${region}:${ACCOUNT}:${name}-id`;
      break;
    case "aws:dynamodb/table:Table":
      out.arn = `arn:aws:dynamodb:${region}:${ACCOUNT}:table/${physical}`;
      break;
    case "aws:cloudwatch/eventBus:EventBus":
      out.arn = `arn:aws:events:${region}:${ACCOUNT}:event-bus/${physical}`;
      break;
    case "aws:cloudwatch/logGroup:LogGroup":
      out.arn = `arn:aws:logs:${region}:${ACCOUNT}:log-group:${physical}`;
      break;
    case "aws:ecr/repository:Repository":
      out.repositoryUrl = `${ACCOUNT}.dkr.ecr.${region}.amazonaws.com/${physical}`;
      out.registryId = ACCOUNT;
      break;
    case "aws:sqs/queue:Queue":
      out.url = `https://sqs.${region}.amazonaws.com/${ACCOUNT}/${physical}`;
      break;
    case "docker-build:index:Image":
      out.ref = `${inputs.tags?.[0] ?? name}@sha256:${"0".repeat(64)}`;
      break;
  }
  return out;
}

/** Installs mocks and `config` (keys like `webchat:iamAuth`); returns the live record. */
export function installMocks(config: Record<string, string>, stack = "stage"): Recorded[] {
  const recorded: Recorded[] = [];
  const region = config["aws:region"] ?? "eu-west-1";
  pulumi.runtime.setAllConfig({ "aws:region": region, ...config });
  pulumi.runtime.setMocks(
    {
      newResource(args) {
        recorded.push({ type: args.type, name: args.name, inputs: args.inputs });
        return { id: `${args.name}-id`, state: { ...computed(args.type, args.name, args.inputs, region), ...args.inputs } };
      },
      call(args) {
        switch (args.token) {
          case "aws:index/getRegion:getRegion":
            return { name: region, region, id: region };
          case "aws:ecr/getAuthorizationToken:getAuthorizationToken":
            return { userName: "AWS", password: "mock-token", authorizationToken: "mock", proxyEndpoint: "mock" };
          default:
            return args.inputs;
        }
      },
    },
    "webchat",
    stack,
    false,
  );
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
