// The three dashboards and CloudWatch's free tier: 3 dashboards of up to 50 metrics each, free;
// past 50 a dashboard costs $3.00 a month. Each dashboard's metrics are counted from its body as
// CloudWatch tells metrics apart (namespace, name and dimensions), without sign-in, with an
// issuer's and with the stack's Cognito pool. The three stacks are synthesized one after the
// other in this process (mocks are global: never two at once).
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import { Recorded } from "../mocks";
import { AUTHORIZER, FUNCTIONS } from "../names";
import { ofType, synthesizeStack } from "./helpers";

const FREE_TIER_METRICS = 50;
const CHAT = "webchat-stage";
const FUNCTIONS_DASHBOARD = "webchat-stage-functions";
const LIMITS_DASHBOARD = "webchat-stage-limits";

const STACKS: Record<string, Record<string, string>> = {
  "without sign-in": {},
  "with an issuer's sign-in": {
    "webchat:jwtIssuer": "https://issuer.example.com/realms/chat",
    "webchat:jwtAudience": "webchat-client",
  },
  "with the stack's Cognito pool": { "webchat:cognito": "true" },
};

interface Counted {
  /** The distinct metrics: namespace, name and the sorted dimensions, one key each. */
  metrics: Set<string>;
  /** Every metric line, hidden ones included (the metric math fetches them), repeats included. */
  lines: number;
  /** The metric-math expressions. */
  expressions: string[];
}

/** What a dashboard body's graphs draw or compute from. A metric line is [namespace, name,
 * dimension, value, …, options?]; "." repeats the previous line's value at that place; an
 * expression line is [{ expression, … }]. */
function count(body: any): Counted {
  const counted: Counted = { metrics: new Set(), lines: 0, expressions: [] };
  for (const widget of body.widgets) {
    let previous: string[] = [];
    for (const line of widget.properties?.metrics ?? []) {
      if (typeof line[0] === "object") {
        counted.expressions.push(line[0].expression);
        continue;
      }
      const strings: string[] = line.filter((part: unknown) => typeof part === "string");
      const parts = strings.map((part, i) => (part === "." ? previous[i] : part));
      previous = parts;
      const [namespace, name, ...rest] = parts;
      assert.ok(namespace && name && rest.length % 2 === 0, JSON.stringify(line));
      const dimensions: string[] = [];
      for (let i = 0; i < rest.length; i += 2) dimensions.push(`${rest[i]}=${rest[i + 1]}`);
      counted.metrics.add(JSON.stringify([namespace, name, dimensions.sort()]));
      counted.lines += 1;
    }
  }
  return counted;
}

const stacks = new Map<string, { recorded: Recorded[]; outputs: Record<string, unknown> }>();
before(async () => {
  for (const [name, config] of Object.entries(STACKS)) stacks.set(name, await synthesizeStack(config));
});

function bodies(recorded: Recorded[]): Record<string, any> {
  return Object.fromEntries(
    ofType(recorded, "aws:cloudwatch/dashboard:Dashboard").map((d) => [d.inputs.dashboardName, JSON.parse(d.inputs.dashboardBody)]),
  );
}

describe("the dashboards, within CloudWatch's free tier", () => {
  for (const [name, config] of Object.entries(STACKS)) {
    const signIn = Object.keys(config).length > 0;
    const functions = signIn ? FUNCTIONS.length + 1 : FUNCTIONS.length;

    it(`draws at most ${FREE_TIER_METRICS} metrics on each of three dashboards, ${name}`, () => {
      const { recorded } = stacks.get(name)!;
      const dashboards = bodies(recorded);
      assert.deepEqual(Object.keys(dashboards).sort(), [CHAT, FUNCTIONS_DASHBOARD, LIMITS_DASHBOARD]);
      assert.equal(ofType(recorded, "aws:lambda/function:Function").length, functions, "the functions the stack has");
      assert.equal(ofType(recorded, "aws:cognito/userPool:UserPool").length, config["webchat:cognito"] ? 1 : 0, "the pool");
      const chat = count(dashboards[CHAT]);
      const fns = count(dashboards[FUNCTIONS_DASHBOARD]);
      const limits = count(dashboards[LIMITS_DASHBOARD]);
      for (const [dashboard, counted] of [[CHAT, chat], [FUNCTIONS_DASHBOARD, fns], [LIMITS_DASHBOARD, limits]] as const) {
        assert.ok(counted.metrics.size <= FREE_TIER_METRICS, `${dashboard}: ${counted.metrics.size} metrics`);
        // stricter, should the free tier count lines: each line, hidden or repeated, and each expression
        const lines = counted.lines + counted.expressions.length;
        assert.ok(lines <= FREE_TIER_METRICS, `${dashboard}: ${lines} lines`);
        // a SEARCH (or a Metrics Insights SELECT) draws whatever it finds: its metrics cannot be counted here
        for (const expression of counted.expressions) assert.doesNotMatch(expression, /\b(SEARCH|SELECT)\b/i, dashboard);
      }
      // the figures docs/deploy.md gives
      assert.deepEqual([chat.metrics.size, chat.lines, chat.expressions.length], [36, 48, 2]);
      assert.deepEqual([fns.metrics.size, fns.lines, fns.expressions.length], [2 * functions + 4, 2 * functions + 4, 0]);
      assert.equal(fns.metrics.size, signIn ? 30 : 28);
      // a frame's three kinds of refusal by the seven message routes' functions, a broadcast's
      // three by broadcast, refused connects by connect, and every refusal (Refusals) by all eight
      assert.deepEqual([limits.metrics.size, limits.lines, limits.expressions.length], [33, 33, 4]);
      // nothing drawn twice across the three, nothing lost: what the one dashboard drew (64, 66
      // with sign-in), and the limits
      const union = new Set([...chat.metrics, ...fns.metrics, ...limits.metrics]);
      assert.equal(union.size, chat.metrics.size + fns.metrics.size + limits.metrics.size);
      assert.equal(union.size, signIn ? 99 : 97);
      // two dashboards would not do: 115 lines and expressions, 117 with sign-in, past their 100
      const all = [chat, fns, limits].reduce((sum, counted) => sum + counted.lines + counted.expressions.length, 0);
      assert.equal(all, signIn ? 117 : 115);
    });
  }

  it("puts the stack's own metrics on the chat and limits dashboards, and AWS's (Lambda, SQS) on the functions dashboard, the authorizer's with sign-in", () => {
    for (const [name, config] of Object.entries(STACKS)) {
      const dashboards = bodies(stacks.get(name)!.recorded);
      const namespaces = (dashboard: string) =>
        [...count(dashboards[dashboard]).metrics].map((key) => JSON.parse(key)[0] as string);
      assert.deepEqual([...new Set(namespaces(CHAT))], ["webchat/stage"], name);
      assert.deepEqual([...new Set(namespaces(LIMITS_DASHBOARD))], ["webchat/stage"], name);
      assert.deepEqual([...new Set(namespaces(FUNCTIONS_DASHBOARD))].sort(), ["AWS/Lambda", "AWS/SQS"], name);
      const authorizer = [...count(dashboards[FUNCTIONS_DASHBOARD]).metrics].filter((key) => key.includes(`webchat-stage-${AUTHORIZER.function}`));
      assert.equal(authorizer.length, Object.keys(config).length > 0 ? 2 : 0, name);
    }
  });

  it("lays each dashboard's graphs out on the 24-wide grid without overlaps", () => {
    for (const [name] of Object.entries(STACKS)) {
      for (const [dashboard, body] of Object.entries(bodies(stacks.get(name)!.recorded))) {
        const widgets: any[] = body.widgets;
        for (const widget of widgets) {
          assert.equal(widget.type, "metric");
          assert.ok(widget.x >= 0 && widget.x + widget.width <= 24, `${dashboard}: ${widget.properties.title}`);
        }
        for (const [i, a] of widgets.entries()) {
          for (const b of widgets.slice(i + 1)) {
            const apart = a.x + a.width <= b.x || b.x + b.width <= a.x || a.y + a.height <= b.y || b.y + b.height <= a.y;
            assert.ok(apart, `${dashboard}: ${a.properties.title} / ${b.properties.title}`);
          }
        }
      }
    }
  });

  it("exports the chat dashboard as dashboardName/dashboardUrl, as before, and the functions and limits dashboards beside it", () => {
    const { recorded, outputs } = stacks.get("without sign-in")!;
    const inConsole = "https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1#dashboards/dashboard/";
    assert.equal(outputs.dashboardName, CHAT);
    assert.equal(outputs.dashboardUrl, `${inConsole}${CHAT}`);
    assert.equal(outputs.functionsDashboardName, FUNCTIONS_DASHBOARD);
    assert.equal(outputs.functionsDashboardUrl, `${inConsole}${FUNCTIONS_DASHBOARD}`);
    assert.equal(outputs.limitsDashboardName, LIMITS_DASHBOARD);
    assert.equal(outputs.limitsDashboardUrl, `${inConsole}${LIMITS_DASHBOARD}`);
    // the chat dashboard keeps the one dashboard's logical name and name: an existing stack updates it in place
    const logical = Object.fromEntries(ofType(recorded, "aws:cloudwatch/dashboard:Dashboard").map((d) => [d.name, d.inputs.dashboardName]));
    assert.deepEqual(logical, { webchat: CHAT, "webchat-functions": FUNCTIONS_DASHBOARD, "webchat-limits": LIMITS_DASHBOARD });
  });
});
