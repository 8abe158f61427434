// Runs the program under Pulumi's mocks with a stack configuration; returns what it registered.
import { loadSettings } from "../settings";
import { webchat } from "../stack";
import { installMocks, PLACEHOLDER_LAYER_SHA256, Recorded, settled, value } from "../mocks";

export async function synthesize(config: Record<string, string> = {}): Promise<Recorded[]> {
  return (await synthesizeStack(config)).recorded;
}

/** As `synthesize`, with the stack's outputs resolved too. */
export async function synthesizeStack(
  config: Record<string, string> = {},
): Promise<{ recorded: Recorded[]; outputs: Record<string, unknown> }> {
  const recorded = installMocks(config);
  const stack = webchat(loadSettings(), PLACEHOLDER_LAYER_SHA256);
  const outputs: Record<string, unknown> = {};
  for (const [name, output] of Object.entries(stack)) outputs[name] = await value(output);
  await settled(recorded);
  return { recorded, outputs };
}

export function ofType<T extends { type: string }>(recorded: T[], type: string): T[] {
  return recorded.filter((r) => r.type === type);
}

export function one<T extends { type: string }>(recorded: T[], type: string): T {
  const found = ofType(recorded, type);
  if (found.length !== 1) throw new Error(`expected one ${type}, found ${found.length}`);
  return found[0];
}
