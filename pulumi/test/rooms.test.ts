// Rooms: their table, the routes join, leave and history, what every chat function is told of
// them, what each function may do to the rooms table (and, for rooms' sake, to the connections
// table and @connections), the dashboard's rooms row, and the two settings, with settings other
// than the defaults (its own process: mocks are global).
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import * as pulumi from "@pulumi/pulumi";
import { ACCOUNT, Recorded } from "../mocks";
import { ENV, FUNCTIONS, ROOMS_TABLE, ROUTES } from "../names";
import { loadSettings } from "../settings";
import { one, ofType, synthesizeStack } from "./helpers";

const CONFIG = { "webchat:historyDays": "30", "webchat:presenceLimit": "0" };

let recorded: Recorded[];
let outputs: Record<string, unknown>;
before(async () => {
  ({ recorded, outputs } = await synthesizeStack(CONFIG));
});

function tableNamed(name: string): Recorded {
  const found = ofType(recorded, "aws:dynamodb/table:Table").find((t) => t.name === name);
  assert.ok(found, `the ${name} table`);
  return found;
}

const arnOf = (table: Recorded) => `arn:aws:dynamodb:eu-west-1:${ACCOUNT}:table/${table.id}`;

function functionNamed(fn: string): Recorded {
  const found = ofType(recorded, "aws:lambda/function:Function").find((f) => f.inputs.name === `webchat-stage-${fn}`);
  assert.ok(found, `function ${fn}`);
  return found;
}

function statementsOf(fn: string): any[] {
  const found = ofType(recorded, "aws:iam/rolePolicy:RolePolicy").find((p) => p.name === `webchat-${fn}`);
  assert.ok(found, `the policy of ${fn}`);
  return JSON.parse(found.inputs.policy).Statement;
}

/** The actions a function may take on exactly `resource`, all of it (no Condition: the limits'
 * buckets, a Condition's, are test/limits.test.ts's). */
function actionsOn(fn: string, resource: string): string[] {
  return statementsOf(fn)
    .filter((s) => [s.Resource].flat().includes(resource) && !s.Condition)
    .flatMap((s) => [s.Action].flat())
    .sort();
}

/** The `@connections` methods a function may call. */
function connectionsMethods(fn: string): string[] {
  const apiId = one(recorded, "aws:apigatewayv2/stage:Stage").inputs.apiId;
  const prefix = `arn:aws:execute-api:eu-west-1:${ACCOUNT}:${apiId}/stage/`;
  return statementsOf(fn)
    .filter((s) => [s.Action].flat().includes("execute-api:ManageConnections"))
    .flatMap((s) => [s.Resource].flat())
    .map((resource: string) => {
      assert.ok(resource.startsWith(prefix) && resource.endsWith("/@connections/*"), resource);
      return resource.slice(prefix.length, -"/@connections/*".length);
    })
    .sort();
}

/** What each function calls on the rooms table (the store's calls, function by function). */
const ROOMS_ACTIONS: Record<string, string[]> = {
  connect: [],
  disconnect: ["DeleteItem", "Query", "UpdateItem"],
  default: [],
  broadcast: ["DeleteItem", "GetItem", "PutItem", "Query", "UpdateItem"],
  list: ["Query"],
  chat: ["DeleteItem", "Query", "UpdateItem"],
  join: ["GetItem", "PutItem", "Query", "UpdateItem"],
  leave: ["DeleteItem", "Query", "UpdateItem"],
  history: ["GetItem", "Query"],
  post: [],
  cleanup: ["DeleteItem", "Query", "UpdateItem"],
  fanout: ["DeleteItem", "Query", "UpdateItem"],
};

/** And on the connections table: what the functions did before rooms, and the rooms' set on each
 * record (read before a connection's record goes, a room added or taken out). */
const CONNECTIONS_ACTIONS: Record<string, string[]> = {
  connect: ["PutItem"],
  disconnect: ["DeleteItem", "GetItem"],
  default: [],
  broadcast: ["DeleteItem", "DescribeTable", "GetItem", "Scan"],
  list: ["Scan"],
  chat: ["DeleteItem", "GetItem"],
  join: ["GetItem", "UpdateItem"],
  leave: ["UpdateItem"],
  history: [],
  post: [],
  cleanup: ["DeleteItem", "GetItem", "Scan"],
  fanout: ["DeleteItem", "GetItem", "Scan"],
};

/** Without sign-in: who posts to connections (every presence frame is a post), who describes them,
 * and who closes them (a message route's function, for the limits). */
const CONNECTIONS_METHODS: Record<string, string[]> = {
  connect: [],
  disconnect: ["POST"],
  default: ["DELETE", "POST"],
  broadcast: ["DELETE", "POST"],
  list: ["DELETE", "POST"],
  chat: ["DELETE", "POST"],
  join: ["DELETE", "POST"],
  leave: ["DELETE", "POST"],
  history: ["DELETE", "POST"],
  post: ["POST"],
  cleanup: ["GET", "POST"],
  fanout: ["POST"],
};

describe("rooms", () => {
  it("keeps rooms in an on-demand table keyed pk (HASH) and sk (RANGE), both strings, with TTL on expiresAt, as protected as the connections table", () => {
    const rooms = tableNamed("rooms");
    assert.deepEqual([ROOMS_TABLE.partitionKey, ROOMS_TABLE.sortKey, ROOMS_TABLE.ttlAttribute], ["pk", "sk", "expiresAt"]);
    assert.equal(rooms.inputs.billingMode, "PAY_PER_REQUEST");
    assert.equal(rooms.inputs.hashKey, "pk");
    assert.equal(rooms.inputs.rangeKey, "sk");
    // exactly the two keys: DynamoDB refuses an attribute no key or index uses
    assert.deepEqual(rooms.inputs.attributes, [
      { name: "pk", type: "S" },
      { name: "sk", type: "S" },
    ]);
    assert.deepEqual(rooms.inputs.ttl, { attributeName: "expiresAt", enabled: true });
    assert.equal(rooms.inputs.globalSecondaryIndexes, undefined, "no index: every read is by key");
    // the same protections as the connections table, whatever they are
    const connections = tableNamed("connections");
    for (const option of ["pointInTimeRecovery", "serverSideEncryption", "deletionProtectionEnabled", "tags"]) {
      assert.deepEqual(rooms.inputs[option], connections.inputs[option], option);
    }
    assert.equal(rooms.inputs.pointInTimeRecovery.enabled, true);
    assert.match(rooms.id, /^rooms-[0-9a-f]{7}$/);
    assert.equal(outputs.roomsTableName, rooms.id);
  });

  it("tells every chat function the rooms table's name and the stack's webchat:historyDays and webchat:presenceLimit", () => {
    for (const fn of FUNCTIONS) {
      const variables = functionNamed(fn).inputs.environment.variables;
      assert.equal(variables[ENV.roomsTable], tableNamed("rooms").id, fn);
      assert.equal(variables[ENV.table], tableNamed("connections").id, fn);
      assert.equal(variables[ENV.historyDays], "30", fn);
      assert.equal(variables[ENV.presenceLimit], "0", fn);
    }
    assert.deepEqual([ENV.roomsTable, ENV.historyDays, ENV.presenceLimit], ["ROOMS_TABLE", "HISTORY_DAYS", "PRESENCE_LIMIT"]);
  });

  it("routes join, leave and history each to its own function, with an invoke permission for that route only", () => {
    const apiId = one(recorded, "aws:apigatewayv2/stage:Stage").inputs.apiId;
    for (const routeKey of ["join", "leave", "history"]) {
      assert.equal(ROUTES[routeKey], routeKey);
      const route = ofType(recorded, "aws:apigatewayv2/route:Route").find((r) => r.inputs.routeKey === routeKey);
      assert.ok(route, routeKey);
      assert.equal(route.inputs.authorizationType, "NONE");
      const integration = ofType(recorded, "aws:apigatewayv2/integration:Integration").find(
        (i) => `integrations/${i.id}` === route.inputs.target,
      );
      assert.ok(integration, `the integration of ${routeKey}`);
      assert.equal(integration.inputs.integrationType, "AWS_PROXY");
      assert.equal(
        integration.inputs.integrationUri,
        `arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/arn:aws:lambda:eu-west-1:${ACCOUNT}:function:webchat-stage-${routeKey}/invocations`,
      );
      const permissions = ofType(recorded, "aws:lambda/permission:Permission").filter((p) => p.inputs.function === `webchat-stage-${routeKey}`);
      assert.deepEqual(
        permissions.map((p) => [p.inputs.principal, p.inputs.sourceArn]),
        [["apigateway.amazonaws.com", `arn:aws:execute-api:eu-west-1:${ACCOUNT}:${apiId}/*/${routeKey}`]],
      );
    }
  });

  it("lets each function do to the rooms table exactly what its code calls, on the table itself", () => {
    const rooms = arnOf(tableNamed("rooms"));
    assert.deepEqual(Object.keys(ROOMS_ACTIONS).sort(), [...FUNCTIONS].sort());
    for (const fn of FUNCTIONS) {
      assert.deepEqual(actionsOn(fn, rooms), ROOMS_ACTIONS[fn].map((a) => `dynamodb:${a}`).sort(), fn);
      // nothing on an index of it, or on any other table, or on "*"
      for (const statement of statementsOf(fn).filter((s) => [s.Action].flat().some((a: string) => a.startsWith("dynamodb:")))) {
        assert.ok([arnOf(tableNamed("connections")), rooms, `${arnOf(tableNamed("connections"))}/index/byUser`].includes(statement.Resource), fn);
      }
    }
  });

  it("lets history only read rooms: no put, update or delete but an update of its limits' buckets", () => {
    const statements = statementsOf("history");
    const actions = statements.filter((s) => !s.Condition).flatMap((s) => [s.Action].flat());
    for (const write of ["PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems", "Scan"]) {
      assert.ok(!actions.includes(`dynamodb:${write}`), write);
    }
    assert.deepEqual(actionsOn("history", arnOf(tableNamed("rooms"))), ["dynamodb:GetItem", "dynamodb:Query"]);
    // its one write, to the limits' items only (test/limits.test.ts)
    const writes = statements.filter((s) => s.Condition);
    assert.deepEqual(writes.map((s) => [[s.Action].flat(), s.Condition["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]]), [
      [["dynamodb:UpdateItem"], ["limit#*"]],
    ]);
  });

  it("lets the functions that leave or join rooms keep each connection's rooms on its record in the connections table", () => {
    const connections = arnOf(tableNamed("connections"));
    for (const fn of FUNCTIONS) {
      assert.deepEqual(actionsOn(fn, connections), CONNECTIONS_ACTIONS[fn].map((a) => `dynamodb:${a}`).sort(), fn);
    }
    assert.ok(actionsOn("join", connections).includes("dynamodb:UpdateItem"), "join adds the room to the record's set");
  });

  it("lets every function that sends presence frames or answers a rooms request POST to @connections (and the message routes' close connections)", () => {
    for (const fn of FUNCTIONS) assert.deepEqual(connectionsMethods(fn), CONNECTIONS_METHODS[fn], fn);
    assert.deepEqual(connectionsMethods("disconnect"), ["POST"], "disconnect tells the rooms it leaves");
  });

  it("draws a rooms row: room messages, history reads of history and join, and presence frames of every function that sends them", () => {
    // on the chat dashboard, with the fan-outs (the functions dashboard has errors, throttles and queues)
    const dashboard = ofType(recorded, "aws:cloudwatch/dashboard:Dashboard").find((d) => d.inputs.dashboardName === "webchat-stage");
    assert.ok(dashboard);
    const widgets: any[] = JSON.parse(dashboard.inputs.dashboardBody).widgets;
    const titled = (title: string) => {
      const found = widgets.find((w) => w.properties.title === title);
      assert.ok(found, title);
      return found;
    };
    const lines = (widget: any): any[][] => widget.properties.metrics.filter((m: any[]) => typeof m[0] === "string");
    const messages = titled("Rooms: messages per minute");
    assert.deepEqual(lines(messages).map((l) => [l[1], l[3], l[4].stat]), [["RoomMessages", "broadcast", "Sum"]]);
    const history = titled("Rooms: history reads per minute");
    assert.deepEqual(lines(history).map((l) => [l[1], l[3], l[4].stat]), [
      ["HistoryReads", "history", "Sum"],
      ["HistoryReads", "join", "Sum"],
    ]);
    const presence = titled("Rooms: presence frames per minute");
    const presenceLines = lines(presence);
    assert.deepEqual(
      presenceLines.map((l) => l[3]).sort(),
      ["broadcast", "chat", "cleanup", "disconnect", "fanout", "join", "leave"],
    );
    for (const line of presenceLines) {
      assert.deepEqual([line[0], line[1], line[2], line[4].stat, line[4].visible], ["webchat/stage", "PresenceFrames", "Function", "Sum", false]);
    }
    const [sum] = presence.properties.metrics.filter((m: any[]) => typeof m[0] === "object");
    assert.equal(sum[0].expression, `SUM([${presenceLines.map((l) => l[4].id).join(",")}])`);
    const others = widgets.filter((w) => ![messages, history, presence].includes(w));
    const bottom = Math.max(...others.map((w) => w.y + w.height));
    for (const widget of [messages, history, presence]) {
      assert.equal(widget.properties.period, 60, "per minute");
      assert.equal(widget.y, bottom, "one row, below the others");
      assert.equal(widget.width, 8);
    }
    // the chat dashboard's widgets before rooms are still there, and nothing overlaps
    assert.equal(widgets.length, 9);
    for (const [i, a] of widgets.entries()) {
      for (const b of widgets.slice(i + 1)) {
        const apart = a.x + a.width <= b.x || b.x + b.width <= a.x || a.y + a.height <= b.y || b.y + b.height <= a.y;
        assert.ok(apart, `${a.properties.title} / ${b.properties.title}`);
      }
    }
    for (const widget of widgets) assert.ok(widget.x + widget.width <= 24, widget.properties.title);
  });
});

describe("the rooms settings", () => {
  const settingsWith = (config: Record<string, string>) => {
    pulumi.runtime.setAllConfig({ "aws:region": "eu-west-1", ...config });
    return loadSettings();
  };

  it("default to a week of history and presence frames in rooms of up to 100", () => {
    const settings = settingsWith({});
    assert.equal(settings.historyDays, 7);
    assert.equal(settings.presenceLimit, 100);
  });

  it("take the functions' bounds: 1 to 365 days, 0 (no presence frames) to 10000 members", () => {
    assert.equal(settingsWith({ "webchat:historyDays": "1" }).historyDays, 1);
    assert.equal(settingsWith({ "webchat:historyDays": "365" }).historyDays, 365);
    assert.equal(settingsWith({ "webchat:presenceLimit": "0" }).presenceLimit, 0);
    assert.equal(settingsWith({ "webchat:presenceLimit": "10000" }).presenceLimit, 10000);
  });

  it("refuse a history or a presence limit out of those bounds, naming the setting", () => {
    for (const days of ["0", "366", "2.5", "-7"]) {
      assert.throws(() => settingsWith({ "webchat:historyDays": days }), /webchat:historyDays must be a whole number from 1 to 365/, days);
    }
    assert.throws(() => settingsWith({ "webchat:historyDays": "a week" }), /webchat:historyDays/);
    for (const limit of ["-1", "10001", "0.5"]) {
      assert.throws(() => settingsWith({ "webchat:presenceLimit": limit }), /webchat:presenceLimit must be a whole number from 0 to 10000/, limit);
    }
  });
});
