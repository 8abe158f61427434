// `npm run synth -- <stack>`: the resource graph of Pulumi.<stack>.yaml computed with mocks, as
// JSON ({"resources":[{type,name,inputs}],"outputs":{}}), so infrastructure changes can be
// reviewed and diffed without credentials or the Pulumi CLI.
import { loadSettings } from "./settings";
import { webchat } from "./stack";
import { installMocks, PLACEHOLDER_LAYER_SHA256, settled, stackConfig, value } from "./mocks";

async function main(): Promise<void> {
  const stack = process.argv[2];
  if (!stack) throw new Error("usage: npm run synth -- <stack>");
  const recorded = installMocks(stackConfig(stack), stack);
  // The layer lookup needs AWS; the synth shows a placeholder hash instead.
  const outputs = webchat(loadSettings(), PLACEHOLDER_LAYER_SHA256);
  const resolved: Record<string, string> = {};
  for (const [name, output] of Object.entries(outputs)) resolved[name] = await value(output);
  await settled(recorded);
  const resources = recorded
    .filter((r) => !r.type.startsWith("pulumi:providers:"))
    .map(({ type, name, inputs }) => ({ type, name, inputs }));
  process.stdout.write(JSON.stringify({ resources, outputs: resolved }, null, 2) + "\n");
}

main().catch((error) => {
  process.stderr.write(`synth failed: ${error instanceof Error ? error.message : error}\n`);
  process.exit(1);
});
