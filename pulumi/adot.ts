// Where to download the ADOT collector Lambda layer: container-image functions cannot attach
// layers, so its extension is baked into each image, and the Dockerfile downloads the layer
// from the location Lambda's GetLayerVersionByArn returns (valid for ten minutes).
import { GetLayerVersionByArnCommand, LambdaClient } from "@aws-sdk/client-lambda";
import * as pulumi from "@pulumi/pulumi";

export function adotLayerUrl(layerArn: string, region: string, override?: string): pulumi.Output<string> {
  if (override) return pulumi.output(override);
  const client = new LambdaClient({ region });
  return pulumi.output(
    client.send(new GetLayerVersionByArnCommand({ Arn: layerArn })).then((layer) => {
      const location = layer.Content?.Location;
      if (!location) throw new Error(`Lambda gave no download location for ${layerArn}`);
      return location;
    }),
  );
}
