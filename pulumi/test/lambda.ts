// A stand-in for the Lambda API's GetLayerVersionByArn and the S3 download it points to, in the
// wire forms of the real ones (REST-JSON, `GET /2018-10-31/layers?find=LayerVersion&Arn=…`),
// for the program's layer lookup (../adot.ts) reached through AWS_ENDPOINT_URL_LAMBDA:
// - every answer carries a fresh presigned-looking Location, as Lambda's does (valid 10 minutes);
// - CodeSha256 is the base64 SHA-256 of the zip;
// - a layer in a region listed as lacking it answers 403 AccessDeniedException, as Lambda answers
//   for another account's layer that is not published there; a caller whose own policy denies
//   the read gets the same code with an identity-based-policy message.
import { createHash, randomBytes } from "crypto";
import * as http from "http";
import { AddressInfo } from "net";

export interface LambdaCall {
  arn: string;
  /** The access key id and region of the request's SigV4 credential scope. */
  accessKeyId: string;
  region: string;
}

export interface FakeLambda {
  endpoint: string;
  calls: LambdaCall[];
  /** How many times the zip was downloaded. */
  downloads: number;
  /** The Locations handed out. */
  locations: string[];
  close(): Promise<void>;
}

export interface LambdaOptions {
  /** Regions where the layer is not published. */
  regionsWithout?: string[];
  /** Deny every lookup as the caller's own IAM policy would. */
  deniedByOwnPolicy?: boolean;
  /** Serve other bytes than those CodeSha256 describes. */
  corruptDownload?: boolean;
}

export async function startLambda(zip: Buffer, options: LambdaOptions = {}): Promise<FakeLambda> {
  const { regionsWithout = [], deniedByOwnPolicy = false, corruptDownload = false } = options;
  const codeSha256 = createHash("sha256").update(zip).digest("base64");
  const state: Omit<FakeLambda, "endpoint" | "close"> = { calls: [], downloads: 0, locations: [] };
  const server = http.createServer((request, response) => {
    const url = new URL(request.url ?? "/", "http://localhost");
    if (request.method === "GET" && url.pathname === "/layer.zip") {
      state.downloads += 1;
      const body = corruptDownload ? Buffer.concat([zip, Buffer.from("!")]) : zip;
      response.writeHead(200, { "content-type": "application/zip", "content-length": body.length });
      response.end(body);
      return;
    }
    if (request.method === "GET" && url.pathname === "/2018-10-31/layers" && url.searchParams.get("find") === "LayerVersion") {
      const arn = url.searchParams.get("Arn") ?? "";
      const scope = /Credential=([^/]+)\/\d{8}\/([^/]+)\/lambda\//.exec(request.headers.authorization ?? "");
      state.calls.push({ arn, accessKeyId: scope?.[1] ?? "", region: scope?.[2] ?? "" });
      const region = arn.split(":")[3];
      if (regionsWithout.includes(region) || deniedByOwnPolicy) {
        const because = deniedByOwnPolicy ? "no identity-based policy allows" : "no resource-based policy allows";
        const body = JSON.stringify({
          Message: `User: arn:aws:iam::123456789012:user/deployer is not authorized to perform: lambda:GetLayerVersion on resource: ${arn} because ${because} the lambda:GetLayerVersion action`,
        });
        response.writeHead(403, { "content-type": "application/json", "x-amzn-errortype": "AccessDeniedException" });
        response.end(body);
        return;
      }
      const address = server.address() as AddressInfo;
      const location = `http://127.0.0.1:${address.port}/layer.zip?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=600&X-Amz-Signature=${randomBytes(32).toString("hex")}`;
      state.locations.push(location);
      response.writeHead(200, { "content-type": "application/json" });
      response.end(
        JSON.stringify({
          Content: { Location: location, CodeSha256: codeSha256, CodeSize: zip.length },
          LayerArn: arn.replace(/:\d+$/, ""),
          LayerVersionArn: arn,
          Description: "",
          CreatedDate: "2025-01-30T18:02:39.436+0000",
          Version: Number(arn.split(":").pop()),
          CompatibleArchitectures: [arn.includes("arm64") ? "arm64" : "x86_64"],
          LicenseInfo: "Apache-2.0",
        }),
      );
      return;
    }
    response.writeHead(404, { "x-amzn-errortype": "ResourceNotFoundException" });
    response.end(JSON.stringify({ Message: `no route for ${request.method} ${url.pathname}` }));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(state, {
    endpoint: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  });
}
