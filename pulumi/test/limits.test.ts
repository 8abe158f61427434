// The per-client limits (issue 23): the six settings and what every chat function is told of them,
// what the limits may do (the buckets in the rooms table, closing a connection, counting a user's
// connections), the limits dashboard, and the two alarms; with every limit off and broadcasts to
// everyone refused (its own process: mocks are global).
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import * as pulumi from "@pulumi/pulumi";
import { ALARM_METRICS, FANOUT_CEILING, REFUSALS } from "../components/alarms";
import { ALL_REFUSALS, COUNTS, LIMITS } from "../components/dashboard";
import { LIMIT_KEYS } from "../components/functions";
import { ACCOUNT, Recorded } from "../mocks";
import { CONNECT_FUNCTION, ENV, FUNCTIONS, MESSAGE_FUNCTIONS } from "../names";
import { loadSettings } from "../settings";
import { ofType, synthesizeStack } from "./helpers";

/** Every limit off (0), the smallest burst, and no broadcast to everyone. */
const CONFIG = {
  "webchat:frameRate": "0",
  "webchat:frameBurst": "1",
  "webchat:userFrameRate": "0",
  "webchat:deliveryBudget": "0",
  "webchat:connectionsPerUser": "0",
  "webchat:everyoneBroadcast": "false",
};

/** The limits' variables, in the order of the settings. */
const VARIABLES = [ENV.frameRate, ENV.frameBurst, ENV.userFrameRate, ENV.deliveryBudget, ENV.connectionsPerUser, ENV.everyoneBroadcast];

let recorded: Recorded[];
let outputs: Record<string, unknown>;
before(async () => {
  ({ recorded, outputs } = await synthesizeStack(CONFIG));
});

function tableArn(name: "connections" | "rooms"): string {
  const table = ofType(recorded, "aws:dynamodb/table:Table").find((t) => t.name === name);
  assert.ok(table, name);
  return `arn:aws:dynamodb:eu-west-1:${ACCOUNT}:table/${table.id}`;
}

function statementsOf(fn: string): any[] {
  const found = ofType(recorded, "aws:iam/rolePolicy:RolePolicy").find((p) => p.name === `webchat-${fn}`);
  assert.ok(found, `the policy of ${fn}`);
  return JSON.parse(found.inputs.policy).Statement;
}

/** The rooms table's actions a function may take on every item, and those on the limits' only. */
function roomsActions(fn: string): { all: string[]; limits: any[] } {
  const onRooms = statementsOf(fn).filter((s) => s.Resource === tableArn("rooms"));
  return {
    all: onRooms.filter((s) => !s.Condition).flatMap((s) => [s.Action].flat()),
    limits: onRooms.filter((s) => s.Condition),
  };
}

function alarmNamed(name: string): Recorded {
  const found = ofType(recorded, "aws:cloudwatch/metricAlarm:MetricAlarm").find((a) => a.inputs.name === name);
  assert.ok(found, name);
  return found;
}

/** An alarm's metrics as [metric, function, stat, period], and the expression it watches. */
function readsOf(alarm: Recorded): { metrics: [string, string, string, number][]; watched: string[] } {
  const queries: any[] = alarm.inputs.metricQueries;
  return {
    metrics: queries
      .filter((q) => q.metric)
      .map((q) => {
        assert.equal(q.metric.namespace, "webchat/stage");
        assert.deepEqual(Object.keys(q.metric.dimensions), ["Function"]);
        assert.equal(q.returnData, false, "only the sum is watched");
        return [q.metric.metricName, q.metric.dimensions.Function, q.metric.stat, q.metric.period];
      }),
    watched: queries.filter((q) => q.returnData).map((q) => q.expression),
  };
}

describe("the limits", () => {
  it("tells every chat function the stack's limits, 0 for a limit turned off and false for no broadcast to everyone", () => {
    const functions = ofType(recorded, "aws:lambda/function:Function");
    assert.equal(functions.length, FUNCTIONS.length);
    for (const fn of functions) {
      const variables = fn.inputs.environment.variables;
      assert.deepEqual(VARIABLES.map((name) => variables[name]), ["0", "1", "0", "0", "0", "false"], fn.inputs.name);
    }
    assert.deepEqual(VARIABLES, ["FRAME_RATE", "FRAME_BURST", "USER_FRAME_RATE", "DELIVERY_BUDGET", "CONNECTIONS_PER_USER", "EVERYONE_BROADCAST"]);
  });

  it("lets every message route's function take from its limits' buckets, UpdateItem on limit# items only where it writes no other item of the rooms table", () => {
    for (const fn of FUNCTIONS) {
      const { all, limits } = roomsActions(fn);
      // every message route's function may update its buckets: on the whole table already (its
      // rooms' writes), or on the limits' items alone; no other function is given the latter
      if (MESSAGE_FUNCTIONS.includes(fn)) assert.ok(all.includes("dynamodb:UpdateItem") || limits.length > 0, fn);
      else assert.deepEqual(limits, [], fn);
      assert.ok(!(all.includes("dynamodb:UpdateItem") && limits.length > 0), `${fn}: no second grant where the first covers it`);
    }
    // the ones that wrote nothing of the rooms table (history reads it; default and list do not write it)
    const restricted = FUNCTIONS.filter((fn) => roomsActions(fn).limits.length > 0).sort();
    assert.deepEqual(restricted, ["default", "history", "list"]);
    for (const fn of restricted) {
      assert.deepEqual(roomsActions(fn).limits, [
        {
          Effect: "Allow",
          Action: ["dynamodb:UpdateItem"],
          Resource: tableArn("rooms"),
          Condition: {
            // LeadingKeys is multivalued: ForAllValues; Null false, lest a request with no key pass
            "ForAllValues:StringLike": { "dynamodb:LeadingKeys": ["limit#*"] },
            Null: { "dynamodb:LeadingKeys": "false" },
          },
        },
      ]);
    }
    assert.equal(LIMIT_KEYS, "limit#*");
    // history still writes nothing else: no put, delete or unconditional update anywhere
    const history = statementsOf("history").filter((s) => !s.Condition).flatMap((s) => [s.Action].flat());
    for (const write of ["PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"]) {
      assert.ok(!history.includes(`dynamodb:${write}`), write);
    }
  });

  it("lets every message route's function close a connection that keeps going past its limits (DELETE @connections), without sign-in too", () => {
    const apiId = ofType(recorded, "aws:apigatewayv2/stage:Stage")[0].inputs.apiId;
    const stageArn = `arn:aws:execute-api:eu-west-1:${ACCOUNT}:${apiId}/stage`;
    for (const fn of FUNCTIONS) {
      const resources = statementsOf(fn)
        .filter((s) => [s.Action].flat().includes("execute-api:ManageConnections"))
        .flatMap((s) => [s.Resource].flat());
      assert.equal(resources.includes(`${stageArn}/DELETE/@connections/*`), MESSAGE_FUNCTIONS.includes(fn), fn);
      if (MESSAGE_FUNCTIONS.includes(fn)) assert.ok(resources.includes(`${stageArn}/POST/@connections/*`), `${fn} says why first`);
    }
  });

  it("lets connect count a user's connections only with sign-in, where connections have users (test/sign-in.test.ts)", () => {
    const statements = statementsOf(CONNECT_FUNCTION);
    const actions = statements.flatMap((s) => [s.Action].flat()).filter((a: string) => a.startsWith("dynamodb:"));
    // its record, and nothing of a user's other connections or their rooms
    assert.deepEqual(actions, ["dynamodb:PutItem"]);
    assert.ok(!statements.some((s) => [s.Action].flat().includes("execute-api:ManageConnections")));
    assert.ok(!statements.some((s) => String(s.Resource).endsWith("/index/byUser")));
  });

  it("draws every kind of refusal, by every function that logs it, on the limits dashboard: a frame's by the message routes' functions, a broadcast's by broadcast, a connect's by connect, and their total, Refusals, by all eight", () => {
    const dashboard = ofType(recorded, "aws:cloudwatch/dashboard:Dashboard").find((d) => d.inputs.dashboardName === "webchat-stage-limits");
    assert.ok(dashboard);
    assert.equal(outputs.limitsDashboardName, "webchat-stage-limits");
    const widgets: any[] = JSON.parse(dashboard.inputs.dashboardBody).widgets;
    const lines: any[][] = widgets.flatMap((w) => w.properties.metrics).filter((m: any[]) => typeof m[0] === "string");
    const drawn = lines.map((l) => `${l[1]} ${l[3]}`).sort();
    const expected = [
      ...["RefusedFrames", "RefusedUserFrames", "ClosedConnections"].flatMap((metric) =>
        ["default", "broadcast", "list", "chat", "join", "leave", "history"].map((fn) => `${metric} ${fn}`),
      ),
      "RefusedBroadcasts broadcast",
      "RefusedDeliveries broadcast",
      "ForbiddenBroadcasts broadcast",
      "RefusedConnects connect",
      ...["default", "broadcast", "list", "chat", "join", "leave", "history", "connect"].map((fn) => `Refusals ${fn}`),
    ].sort();
    assert.deepEqual(drawn, expected);
    assert.deepEqual(Object.values(LIMITS).map((kind) => kind.metric).sort(), [
      "ClosedConnections", "ForbiddenBroadcasts", "RefusedBroadcasts", "RefusedConnects", "RefusedDeliveries", "RefusedFrames", "RefusedUserFrames",
    ]);
    for (const line of lines) {
      assert.deepEqual([line[0], line[2], line[4].stat], ["webchat/stage", "Function", "Sum"], JSON.stringify(line));
    }
    // each kind logged by several functions is one line: the sum of its hidden ones
    const expressions: string[] = widgets.flatMap((w) => w.properties.metrics).filter((m: any[]) => typeof m[0] === "object").map((m: any[]) => m[0].expression);
    assert.equal(expressions.length, 4);
    // (the kinds of one function are drawn as they are)
    const summed = ["RefusedFrames", "RefusedUserFrames", "ClosedConnections", "Refusals"];
    for (const line of lines) assert.equal(line[4].visible === false, summed.includes(line[1]), JSON.stringify(line));
    for (const widget of widgets) {
      assert.equal(widget.properties.period, 60, "per minute");
      assert.match(widget.properties.title, /^Limits: .* per minute$/);
    }
  });

  it("alarms on refusals sustained: one alarm on Refusals, every refusal of any kind, summed over the eight functions that refuse, at least 100 a minute in 5 minutes running", () => {
    const alarm = alarmNamed("webchat-stage-refusals");
    const { metrics, watched } = readsOf(alarm);
    // every message route's function (each frame takes from its budgets there) and connect's
    const refusers = ["default", "broadcast", "list", "chat", "join", "leave", "history", "connect"];
    assert.deepEqual(metrics, refusers.map((fn) => ["Refusals", fn, "Sum", 60]));
    // the functions that log a kind Refusals counts (all but ClosedConnections) are those eight
    const kinds = Object.values(LIMITS).filter((kind) => kind.metric !== "ClosedConnections");
    assert.deepEqual([...new Set(kinds.flatMap((kind) => kind.functions))].sort(), [...refusers].sort());
    assert.deepEqual([ALL_REFUSALS.metric, [...ALL_REFUSALS.functions]], ["Refusals", refusers]);
    // CloudWatch refuses an alarm on metric math that reads more than 10 metrics, and SEARCH
    assert.ok(metrics.length <= ALARM_METRICS, `${metrics.length} metrics`);
    assert.equal(ALARM_METRICS, 10);
    assert.deepEqual(watched, ["SUM([m0,m1,m2,m3,m4,m5,m6,m7])"]);
    // eight metrics and the one expression the alarm watches: each query a metric or an
    // expression, never both, and only the expression returning data
    const queries: any[] = alarm.inputs.metricQueries;
    assert.equal(queries.length, 9);
    for (const query of queries) assert.ok(Boolean(query.metric) !== Boolean(query.expression), JSON.stringify(query));
    assert.deepEqual(queries.filter((q) => q.returnData).map((q) => q.id), ["total"]);
    assert.equal(alarm.inputs.metricName, undefined, "a metric math alarm names no metric of its own");
    assert.deepEqual(
      [alarm.inputs.comparisonOperator, alarm.inputs.threshold, alarm.inputs.evaluationPeriods, alarm.inputs.datapointsToAlarm, alarm.inputs.treatMissingData],
      ["GreaterThanOrEqualToThreshold", 100, 5, 5, "notBreaching"],
    );
    assert.deepEqual([REFUSALS.threshold, REFUSALS.periods], [100, 5]);
    assert.equal(alarm.inputs.alarmActions, undefined, "no topic: no actions");
    // one alarm, no composite over per-kind ones
    assert.deepEqual(ofType(recorded, "aws:cloudwatch/compositeAlarm:CompositeAlarm"), []);
    assert.equal(outputs.refusalsAlarmName, "webchat-stage-refusals");
  });

  it("draws the refusals alarm's sum on the limits dashboard, against its threshold", () => {
    const dashboard = ofType(recorded, "aws:cloudwatch/dashboard:Dashboard").find((d) => d.inputs.dashboardName === "webchat-stage-limits");
    assert.ok(dashboard);
    const widgets: any[] = JSON.parse(dashboard.inputs.dashboardBody).widgets;
    const total = widgets.find((w) => w.properties.metrics.some((m: any[]) => m[1] === "Refusals"));
    assert.ok(total);
    const expressions = total.properties.metrics.filter((m: any[]) => typeof m[0] === "object").map((m: any[]) => m[0].expression);
    assert.deepEqual(expressions, ["SUM([refusals0,refusals1,refusals2,refusals3,refusals4,refusals5,refusals6,refusals7])"]);
    assert.deepEqual(
      total.properties.annotations.horizontal.map((a: any) => a.value),
      [100],
    );
    assert.match(total.properties.annotations.horizontal[0].label, /5 minutes/);
  });

  it("alarms on the fan-out ceiling: the fan-outs' posts answered 429, summed over broadcast and fanout, more than none in 3 of 5 minutes", () => {
    const alarm = alarmNamed("webchat-stage-fanout-ceiling");
    const { metrics, watched } = readsOf(alarm);
    assert.ok((COUNTS.outcomes as readonly string[]).includes(FANOUT_CEILING.metric), "a metric the fan-outs log");
    assert.deepEqual(metrics, [
      ["Throttled", "broadcast", "Sum", 60],
      ["Throttled", "fanout", "Sum", 60],
    ]);
    assert.deepEqual(watched, ["SUM([m0,m1])"]);
    assert.deepEqual(
      [alarm.inputs.comparisonOperator, alarm.inputs.threshold, alarm.inputs.evaluationPeriods, alarm.inputs.datapointsToAlarm, alarm.inputs.treatMissingData],
      ["GreaterThanThreshold", 0, 5, 3, "notBreaching"],
    );
    assert.equal(alarm.inputs.alarmActions, undefined);
    assert.equal(outputs.fanoutCeilingAlarmName, "webchat-stage-fanout-ceiling");
    // and nothing else: the refusals alarm and the ceiling
    assert.deepEqual(ofType(recorded, "aws:cloudwatch/metricAlarm:MetricAlarm").map((a) => a.inputs.name).sort(), [
      "webchat-stage-fanout-ceiling",
      "webchat-stage-refusals",
    ]);
  });
});

describe("the limits settings", () => {
  const settingsWith = (config: Record<string, string>) => {
    pulumi.runtime.setAllConfig({ "aws:region": "eu-west-1", ...config });
    return loadSettings();
  };

  it("default to 10 frames a second in bursts of 20, 20 a user, 10 000 deliveries a minute, 10 connections a user, broadcasts to everyone", () => {
    const settings = settingsWith({});
    assert.deepEqual(
      [settings.frameRate, settings.frameBurst, settings.userFrameRate, settings.deliveryBudget, settings.connectionsPerUser, settings.everyoneBroadcast],
      [10, 20, 20, 10000, 10, true],
    );
  });

  it("take the functions' bounds, 0 turning a limit off", () => {
    const bounds: [string, number, number][] = [
      ["frameRate", 0, 1000],
      ["frameBurst", 1, 10000],
      ["userFrameRate", 0, 10000],
      ["deliveryBudget", 0, 10_000_000],
      ["connectionsPerUser", 0, 1000],
    ];
    for (const [key, min, max] of bounds) {
      for (const value of [min, max]) {
        const settings = settingsWith({ [`webchat:${key}`]: String(value) }) as unknown as Record<string, number>;
        assert.equal(settings[key], value, key);
      }
    }
    assert.equal(settingsWith({ "webchat:everyoneBroadcast": "false" }).everyoneBroadcast, false);
    assert.equal(settingsWith({ "webchat:everyoneBroadcast": "true" }).everyoneBroadcast, true);
  });

  it("refuse a limit out of its bounds or not a whole number, and an everyoneBroadcast not true or false, naming the setting", () => {
    const refused: [string, string[], string][] = [
      ["frameRate", ["-1", "1001", "2.5"], "from 0 to 1000"],
      ["frameBurst", ["0", "10001", "1.5"], "from 1 to 10000"],
      ["userFrameRate", ["-1", "10001"], "from 0 to 10000"],
      ["deliveryBudget", ["-1", "10000001"], "from 0 to 10000000"],
      ["connectionsPerUser", ["-1", "1001"], "from 0 to 1000"],
    ];
    for (const [key, values, range] of refused) {
      for (const value of values) {
        assert.throws(() => settingsWith({ [`webchat:${key}`]: value }), new RegExp(`webchat:${key} must be a whole number ${range} \\(.*\\), not ${value}`), `${key}=${value}`);
      }
      assert.throws(() => settingsWith({ [`webchat:${key}`]: "ten" }), new RegExp(`webchat:${key}`), `${key}=ten`);
    }
    for (const value of ["yes", "0", "off"]) {
      assert.throws(
        () => settingsWith({ "webchat:everyoneBroadcast": value }),
        new RegExp(`webchat:everyoneBroadcast must be true or false \\(whether a broadcast may address everyone\\), not ${value}`),
        value,
      );
    }
  });
});
