// Broadcasts at internet scale: the shard queue, its dead letters, the `fanout` worker's trigger,
// permissions and environment, the post rate budget, and the dashboard, with settings other than
// the defaults (its own process: mocks are global).
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import * as pulumi from "@pulumi/pulumi";
import { applicationLogLevel } from "../components/functions";
import { ACCOUNT, Recorded } from "../mocks";
import { ENV, FUNCTIONS, SHARDS } from "../names";
import { loadSettings } from "../settings";
import { one, ofType, synthesize } from "./helpers";

const CONFIG = {
  "webchat:fanoutWorkers": "10",
  "webchat:fanoutTimeout": "120",
  "webchat:postRateBudget": "5005",
  "webchat:scanPageSize": "250",
  "webchat:logLevel": "warn",
};

let recorded: Recorded[];
before(async () => {
  recorded = await synthesize(CONFIG);
});

function queueNamed(name: string): Recorded {
  const found = ofType(recorded, "aws:sqs/queue:Queue").find((q) => q.name === name);
  assert.ok(found, name);
  return found;
}

const arnOf = (queue: Recorded) => `arn:aws:sqs:eu-west-1:${ACCOUNT}:${queue.id}`;
const urlOf = (queue: Recorded) => `https://sqs.eu-west-1.amazonaws.com/${ACCOUNT}/${queue.id}`;

function functionNamed(fn: string): Recorded {
  const found = ofType(recorded, "aws:lambda/function:Function").find((f) => f.inputs.name === `webchat-stage-${fn}`);
  assert.ok(found, `function ${fn}`);
  return found;
}

/** Every action a role's inline policy allows, by the policy's logical name. */
function actionsByPolicy(): Map<string, { actions: string[]; statements: any[] }> {
  const policies = new Map<string, { actions: string[]; statements: any[] }>();
  for (const policy of ofType(recorded, "aws:iam/rolePolicy:RolePolicy")) {
    const statements: any[] = JSON.parse(policy.inputs.policy).Statement;
    policies.set(policy.name, { actions: statements.flatMap((s) => [s.Action].flat()), statements });
  }
  return policies;
}

describe("sharded broadcasts", () => {
  it("puts shard jobs on an encrypted queue that sends a job received three times to an encrypted dead-letter queue", () => {
    const queue = queueNamed("shards");
    const deadLetters = queueNamed("shards-dead-letters");
    assert.deepEqual(JSON.parse(queue.inputs.redrivePolicy), { deadLetterTargetArn: arnOf(deadLetters), maxReceiveCount: 3 });
    assert.equal(queue.inputs.sqsManagedSseEnabled, true);
    assert.equal(deadLetters.inputs.sqsManagedSseEnabled, true);
    assert.equal(deadLetters.inputs.messageRetentionSeconds, 14 * 24 * 3600);
    assert.ok(queue.inputs.messageRetentionSeconds <= deadLetters.inputs.messageRetentionSeconds);
  });

  it("keeps a received job invisible for six times the worker's timeout, which is webchat:fanoutTimeout", () => {
    assert.equal(functionNamed(SHARDS.function).inputs.timeout, 120);
    assert.equal(queueNamed("shards").inputs.visibilityTimeoutSeconds, 6 * 120);
    for (const fn of FUNCTIONS.filter((f) => f !== SHARDS.function)) assert.equal(functionNamed(fn).inputs.timeout, 10, fn);
  });

  it("runs fanout from the queue one job at a time, failures reported per job, at most webchat:fanoutWorkers at once", () => {
    const mapping = one(recorded, "aws:lambda/eventSourceMapping:EventSourceMapping");
    assert.equal(mapping.inputs.eventSourceArn, arnOf(queueNamed("shards")));
    assert.equal(mapping.inputs.functionName, `arn:aws:lambda:eu-west-1:${ACCOUNT}:function:webchat-stage-fanout`);
    assert.equal(mapping.inputs.batchSize, 1);
    assert.equal(mapping.inputs.batchSize, SHARDS.batchSize);
    assert.deepEqual(mapping.inputs.functionResponseTypes, ["ReportBatchItemFailures"]);
    assert.deepEqual(mapping.inputs.scalingConfig, { maximumConcurrency: 10 });
    // no API route and no rule invokes the worker: the mapping is its only trigger
    const invokers = ofType(recorded, "aws:lambda/permission:Permission").filter((p) => p.inputs.function === "webchat-stage-fanout");
    assert.deepEqual(invokers, []);
    assert.ok(!ofType(recorded, "aws:apigatewayv2/integration:Integration").some((i) => /webchat-stage-fanout\//.test(i.inputs.integrationUri)));
  });

  it("lets fanout scan, prune, post and work its queue, and broadcast send to it and describe the table, and nothing more", () => {
    const policies = actionsByPolicy();
    const queueArn = arnOf(queueNamed("shards"));
    const tableArnOf = (name: string) =>
      `arn:aws:dynamodb:eu-west-1:${ACCOUNT}:table/${ofType(recorded, "aws:dynamodb/table:Table").find((t) => t.name === name)?.id}`;
    const tableArn = tableArnOf("connections");
    const apiId = one(recorded, "aws:apigatewayv2/stage:Stage").inputs.apiId;
    const statementOf = (policy: string, prefix: string) => {
      const found = policies.get(policy)!.statements.filter((s) => [s.Action].flat().some((a: string) => a.startsWith(prefix)));
      assert.equal(found.length, 1, `${policy}: one ${prefix} statement`);
      return found[0];
    };

    const fanout = statementOf("webchat-fanout", "sqs:");
    assert.deepEqual(
      [fanout.Action].flat().sort(),
      ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage", "sqs:SendMessage"],
    );
    assert.equal(fanout.Resource, queueArn);
    // the connections table: its segment's scan, pruning, and the rooms a pruned connection was
    // in (read from its record, each taken out of it); the rooms table: a room's membership
    // shard, and leaving its rooms
    const fanoutTables = policies.get("webchat-fanout")!.statements.filter((s) => [s.Action].flat().some((a: string) => a.startsWith("dynamodb:")));
    assert.deepEqual(
      fanoutTables.map((s) => [s.Resource, [s.Action].flat().sort()]),
      [
        [tableArn, ["dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:Scan"]],
        [tableArnOf("rooms"), ["dynamodb:DeleteItem", "dynamodb:Query", "dynamodb:UpdateItem"]],
      ],
    );
    const manage = statementOf("webchat-fanout", "execute-api:");
    assert.deepEqual([manage.Action].flat(), ["execute-api:ManageConnections"]);
    assert.deepEqual([manage.Resource].flat(), [`arn:aws:execute-api:eu-west-1:${ACCOUNT}:${apiId}/stage/POST/@connections/*`]);
    assert.ok(!policies.get("webchat-fanout")!.actions.some((a) => a.startsWith("events:")));

    const broadcast = statementOf("webchat-broadcast", "sqs:");
    assert.deepEqual([broadcast.Action].flat(), ["sqs:SendMessage"]);
    assert.equal(broadcast.Resource, queueArn);
    const broadcastTable = policies.get("webchat-broadcast")!.statements.filter((s) => [s.Action].flat().includes("dynamodb:DescribeTable"));
    assert.deepEqual(broadcastTable.map((s) => s.Resource), [tableArn], "DescribeTable of the connections table only");

    for (const [name, { actions }] of policies) {
      if (name === "webchat-fanout" || name === "webchat-broadcast") continue;
      assert.deepEqual(actions.filter((a) => a.toLowerCase().startsWith("sqs:")), [], `${name} has no SQS permission`);
    }
  });

  it("gives broadcast and fanout the queue's URL, each worker's share of the budget, the page size, the worker count and the receives; every function the namespace", () => {
    const url = urlOf(queueNamed("shards"));
    for (const fn of FUNCTIONS) {
      const variables = functionNamed(fn).inputs.environment.variables;
      assert.equal(variables[ENV.metricsNamespace], "webchat/stage", fn);
      if (fn === "broadcast" || fn === SHARDS.function) {
        assert.equal(variables[ENV.shardQueue], url, fn);
        // 5005 posts/s over 10 workers: 500 each, rounded down so that all of them stay within it
        assert.equal(variables[ENV.postRate], "500", fn);
        assert.equal(variables[ENV.scanPageSize], "250", fn);
        // a sharded broadcast keeps every worker busy however stale the table's item count
        assert.equal(variables[ENV.fanoutWorkers], "10", fn);
        // the job that fails its last receive is told to its sender
        assert.equal(variables[ENV.shardAttempts], "3", fn); // the redrive policy's maxReceiveCount
      } else {
        for (const name of [ENV.shardQueue, ENV.postRate, ENV.scanPageSize, ENV.fanoutWorkers, ENV.shardAttempts]) {
          assert.equal(variables[name], undefined, `${fn}: ${name}`);
        }
      }
    }
  });

  it("filters logs at warn in the functions, but keeps Lambda's filter at INFO, where the metrics' EMF lines (no level key) pass", () => {
    for (const fn of FUNCTIONS) {
      const lambda = functionNamed(fn);
      assert.equal(lambda.inputs.environment.variables[ENV.logLevel], "warn", fn);
      assert.equal(lambda.inputs.loggingConfig.applicationLogLevel, "INFO", fn);
    }
  });

  it("draws every fan-out and cleanup metric and the post rate on the chat dashboard, each function's errors and throttles and both queues on the functions dashboard", () => {
    const dashboards = ofType(recorded, "aws:cloudwatch/dashboard:Dashboard");
    // (and a third, the limits', test/limits.test.ts's)
    assert.deepEqual(dashboards.map((d) => d.inputs.dashboardName).sort(), ["webchat-stage", "webchat-stage-functions", "webchat-stage-limits"]);
    const widgetsOf = (name: string): any[] => JSON.parse(dashboards.find((d) => d.inputs.dashboardName === name)!.inputs.dashboardBody).widgets;
    const chat = widgetsOf("webchat-stage");
    const functions = widgetsOf("webchat-stage-functions");
    for (const widget of [...chat, ...functions]) {
      assert.equal(widget.type, "metric");
      assert.equal(widget.properties.region, "eu-west-1");
    }
    // [namespace, metric, dimension, value, {stat, …}] lines; expressions are single objects
    const linesOf = (widgets: any[]): any[][] => widgets.flatMap((w) => w.properties.metrics).filter((m: any[]) => typeof m[0] === "string");
    const statsIn = (lines: any[][]) => (namespace: string, metric: string, dimension: string, value: string) =>
      lines.filter((l) => l[0] === namespace && l[1] === metric && l[2] === dimension && l[3] === value).map((l) => l[4]?.stat);
    const chatLines = linesOf(chat);
    const functionLines = linesOf(functions);
    const stats = statsIn(chatLines);
    const counts = ["Broadcasts", "ShardedBroadcasts", "ShardJobs", "Delivered", "Pruned", "Connecting", "Failed", "NotAttempted", "Throttled"];
    for (const metric of counts) {
      for (const fn of ["broadcast", "fanout"]) {
        assert.ok(stats("webchat/stage", metric, "Function", fn).includes("Sum"), `${metric} of ${fn}`);
      }
    }
    for (const fn of ["broadcast", "fanout"]) {
      assert.deepEqual(stats("webchat/stage", "FanOutDuration", "Function", fn).sort(), ["Maximum", "p50", "p99"], fn);
    }
    for (const metric of ["Cleanups", "CleanupChecked", "CleanupExpired", "CleanupGone", "CleanupFailed"]) {
      assert.deepEqual(stats("webchat/stage", metric, "Function", "cleanup"), ["Sum"], metric);
    }
    assert.deepEqual(stats("webchat/stage", "CleanupDuration", "Function", "cleanup"), ["Maximum"]);
    for (const line of chatLines) {
      assert.equal(line[0], "webchat/stage", "the chat dashboard draws the stack's own metrics only");
      assert.equal(line.length, 5, "one dimension, Function");
      assert.equal(line[2], "Function");
      assert.ok(FUNCTIONS.includes(line[3]), line[3]);
    }
    const functionStats = statsIn(functionLines);
    for (const fn of FUNCTIONS) {
      for (const metric of ["Errors", "Throttles"]) {
        assert.deepEqual(functionStats("AWS/Lambda", metric, "FunctionName", `webchat-stage-${fn}`), ["Sum"], `${metric} of ${fn}`);
      }
    }
    for (const queue of [queueNamed("shards"), queueNamed("shards-dead-letters")]) {
      for (const metric of ["ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage"]) {
        assert.equal(functionStats("AWS/SQS", metric, "QueueName", queue.id).length, 1, `${metric} of ${queue.name}`);
      }
    }
    assert.ok(functionLines.every((l) => l[0] === "AWS/Lambda" || l[0] === "AWS/SQS"), "the functions dashboard draws AWS's metrics only");
    const budget = (widgets: any[]) => widgets.flatMap((w) => w.properties.annotations?.horizontal ?? []).map((a: any) => a.value);
    assert.deepEqual(budget(chat), [5005]);
    assert.deepEqual(budget(functions), []);
  });
});

describe("the sharding settings", () => {
  const settingsWith = (config: Record<string, string>) => {
    pulumi.runtime.setAllConfig({ "aws:region": "eu-west-1", ...config });
    return loadSettings();
  };

  it("default to 8 workers sharing 8,000 posts a second, a 60-second worker and 1,000-item pages", () => {
    const settings = settingsWith({});
    assert.equal(settings.fanoutWorkers, 8);
    assert.equal(settings.postRateBudget, 8000);
    assert.equal(settings.fanoutTimeout, 60);
    assert.equal(settings.scanPageSize, 1000);
  });

  it("refuses a number of workers the event source mapping does not accept, naming webchat:fanoutWorkers", () => {
    for (const workers of ["1", "1001", "2.5"]) {
      assert.throws(() => settingsWith({ "webchat:fanoutWorkers": workers }), /webchat:fanoutWorkers must be a whole number from 2 to 1000/, workers);
    }
    assert.equal(settingsWith({ "webchat:fanoutWorkers": "1000", "webchat:postRateBudget": "1000" }).fanoutWorkers, 1000);
  });

  it("refuses a worker timeout Lambda does not accept, and a budget or page size that gives nothing to do", () => {
    assert.throws(() => settingsWith({ "webchat:fanoutTimeout": "901" }), /webchat:fanoutTimeout must be a whole number from 1 to 900/);
    assert.throws(() => settingsWith({ "webchat:fanoutTimeout": "0" }), /webchat:fanoutTimeout/);
    // fewer posts a second than workers would leave some worker none
    assert.throws(
      () => settingsWith({ "webchat:fanoutWorkers": "16", "webchat:postRateBudget": "15" }),
      /webchat:postRateBudget must be a whole number at least 16 .*webchat:fanoutWorkers/,
    );
    assert.throws(() => settingsWith({ "webchat:scanPageSize": "0" }), /webchat:scanPageSize must be a whole number at least 1/);
  });
});

describe("Lambda's application log level", () => {
  it("follows the stack's level down to TRACE, but never filters out INFO, the level of the metrics' lines", () => {
    assert.deepEqual(
      ["trace", "debug", "info", "warn", "error"].map(applicationLogLevel),
      ["TRACE", "DEBUG", "INFO", "INFO", "INFO"],
    );
  });
});
