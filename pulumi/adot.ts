// The ADOT collector layer whose extension goes into every image. Container-image functions
// cannot attach layers, so the Dockerfile unpacks the layer's zip itself; this module hands it the
// zip, under a name that only changes when the layer does:
//
// - Lambda describes the layer version (GetLayerVersionByArn, asked in the layer's own region with
//   the stack's AWS profile or keys): its CodeSha256 is the zip's identity. The download URL it
//   also gives is presigned, valid for ten minutes and different on every call, so it is never a
//   build input: an unchanged layer leaves every image's inputs unchanged, and nothing rebuilds.
// - The zip is downloaded only when build/adot-layer/<sha256 hex>.zip is missing, checked against
//   that hash, and moved into place whole. The build reads the file from its context, so no build
//   depends on a URL that may expire halfway through it.
import { GetLayerVersionByArnCommand, LambdaClient } from "@aws-sdk/client-lambda";
import { createHash } from "crypto";
import * as pulumi from "@pulumi/pulumi";
import * as fs from "fs";
import * as path from "path";
import { Settings } from "./settings";

/** The AWS profile or keys of the stack (`aws:profile`, `aws:accessKey`/`secretKey`/`token`). */
export interface AwsAccess {
  profile?: string;
  accessKey?: string;
  secretKey?: string;
  token?: string;
}

/** Where the zips are kept: inside the Docker build context, which `.dockerignore` lets in. */
export const LAYER_CACHE = path.resolve(__dirname, "..", "build", "adot-layer");

const LAYER_ARN = /^arn:aws[a-z-]*:lambda:([a-z0-9-]+):\d{12}:layer:[A-Za-z0-9_-]+:\d+$/;

/**
 * Makes the layer version's zip available to the build as `<cache>/<sha256>.zip`, downloading it
 * at most once; returns that SHA-256 in hex (the Dockerfile's ADOT_LAYER_SHA256).
 */
export async function fetchAdotLayer(arn: string, access: AwsAccess, cache = LAYER_CACHE): Promise<string> {
  const region = LAYER_ARN.exec(arn)?.[1];
  if (!region) {
    throw new Error(`webchat:adotLayerArn must be a Lambda layer version ARN (arn:aws:lambda:<region>:<account>:layer:<name>:<version>), not ${arn}`);
  }
  const client = new LambdaClient({
    region,
    profile: access.profile,
    credentials:
      access.accessKey && access.secretKey
        ? { accessKeyId: access.accessKey, secretAccessKey: access.secretKey, sessionToken: access.token }
        : undefined,
  });
  let content;
  try {
    content = (await client.send(new GetLayerVersionByArnCommand({ Arn: arn }))).Content;
  } catch (error) {
    const { name, message } = error as Error;
    // Another account's layer that is not published in a region answers AccessDenied ("no
    // resource-based policy allows"), not NotFound. A denial by the caller's own policies or an
    // SCP ("identity-based policy", "service control policy") is a different fix.
    const ownPolicy = /identity-based policy|service control policy|permissions boundary|session policy/i.test(message);
    if (name === "ResourceNotFoundException" || (name === "AccessDeniedException" && !ownPolicy)) {
      throw new Error(
        `the ADOT collector layer ${arn} is not available in ${region} (${name}). AWS publishes it in some regions ` +
          `only: set webchat:adotLayerArn to the same layer in a region that has it, e.g. ` +
          `${arn.replace(`:${region}:`, ":us-east-1:")}. Only its extension is copied into the images, so the ` +
          `layer's region does not have to be the stack's.`,
      );
    }
    if (name === "AccessDeniedException") {
      throw new Error(
        `the stack's AWS credentials may not read the ADOT collector layer (webchat:adotLayerArn ${arn}): ` +
          `allow lambda:GetLayerVersion on it. AWS said: ${message}`,
      );
    }
    throw new Error(`looking up webchat:adotLayerArn ${arn} in ${region}: ${name}: ${message}`);
  } finally {
    client.destroy();
  }
  if (!content?.CodeSha256 || !content.Location) {
    throw new Error(`Lambda described ${arn} without its CodeSha256 and download location`);
  }
  const sha256 = Buffer.from(content.CodeSha256, "base64").toString("hex");
  const file = path.join(cache, `${sha256}.zip`);
  // checked, not trusted: the README lets users put the zip there themselves
  if (fs.existsSync(file) && sha256Hex(fs.readFileSync(file)) === sha256) return sha256;
  fs.mkdirSync(cache, { recursive: true });
  // Lambda's URL is valid for ten minutes; a download that has not finished in five is stuck
  const response = await fetch(content.Location, { signal: AbortSignal.timeout(5 * 60 * 1000) });
  if (!response.ok) throw new Error(`downloading ${arn}: HTTP ${response.status}`);
  const zip = Buffer.from(await response.arrayBuffer());
  const got = sha256Hex(zip);
  if (got !== sha256) throw new Error(`downloading ${arn}: the zip's SHA-256 is ${got}, Lambda says ${sha256}`);
  const partial = `${file}.${process.pid}.partial`;
  fs.writeFileSync(partial, zip);
  fs.renameSync(partial, file);
  return sha256;
}

/** The stack's layer (webchat:adotLayerArn), looked up with the stack's AWS access: its SHA-256. */
export function stackAdotLayer(settings: Settings): pulumi.Output<string> {
  const { profile, accessKey, secretKey, token } = settings.aws;
  const layer = pulumi
    .all([accessKey, secretKey, token])
    .apply(([accessKey, secretKey, token]) =>
      fetchAdotLayer(settings.adotLayerArn, { profile, accessKey, secretKey, token }),
    );
  // the hash is no secret, even when the keys that fetched it are
  return pulumi.unsecret(layer);
}

function sha256Hex(data: Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}
