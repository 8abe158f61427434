// The layer lookup on its own, against the stand-in Lambda API (fast; the language-host test runs
// it inside the program).
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, it } from "node:test";
import { fetchAdotLayer } from "../adot";
import { startLambda } from "./lambda";

const ARN = "arn:aws:lambda:eu-west-1:901920570463:layer:aws-otel-collector-arm64-ver-0-117-0:1";
const ZIP = Buffer.from("a layer zip for the adot tests\n");
const access = { accessKey: "AKIDTEST", secretKey: "secret" };
let cache: string;

before(() => {
  cache = fs.mkdtempSync(path.join(os.tmpdir(), "webchat-layer-"));
});
after(() => fs.rmSync(cache, { recursive: true, force: true }));

async function withLambda<T>(options: Parameters<typeof startLambda>[1], body: () => Promise<T>): Promise<T> {
  const lambda = await startLambda(ZIP, options);
  process.env.AWS_ENDPOINT_URL_LAMBDA = lambda.endpoint;
  try {
    return await body();
  } finally {
    delete process.env.AWS_ENDPOINT_URL_LAMBDA;
    await lambda.close();
  }
}

it("tells a denial by the caller's own policy apart from a region without the layer", async () => {
  await withLambda({ deniedByOwnPolicy: true }, async () => {
    await assert.rejects(fetchAdotLayer(ARN, access, cache), (error: Error) => {
      assert.match(error.message, /allow lambda:GetLayerVersion/);
      assert.match(error.message, /webchat:adotLayerArn/);
      assert.doesNotMatch(error.message, /not available in/);
      return true;
    });
  });
});

it("refuses a download whose bytes are not the CodeSha256 Lambda gave, and keeps nothing", async () => {
  await withLambda({ corruptDownload: true }, async () => {
    await assert.rejects(fetchAdotLayer(ARN, access, cache), /the zip's SHA-256 is [0-9a-f]{64}, Lambda says [0-9a-f]{64}/);
  });
  assert.deepEqual(fs.readdirSync(cache), []);
});

it("refuses an ARN that is not a layer version, naming the setting", async () => {
  await assert.rejects(fetchAdotLayer("arn:aws:lambda:eu-west-1:901920570463:layer:collector", access, cache), /webchat:adotLayerArn must be a Lambda layer version ARN/);
});
