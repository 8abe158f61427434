// One ECR repository, and one image per function built from the repository's Dockerfile.
import * as aws from "@pulumi/aws";
import * as dockerBuild from "@pulumi/docker-build";
import * as pulumi from "@pulumi/pulumi";
import * as path from "path";

export interface ImagesArgs {
  functions: readonly string[];
  architecture: "arm64" | "x86_64";
  /** Where to download the ADOT collector layer (its extension goes into every image). */
  adotLayerUrl: pulumi.Input<string>;
}

export class Images extends pulumi.ComponentResource {
  public readonly repository: aws.ecr.Repository;
  /** Image reference (tag@digest) per function. */
  public readonly refs: Record<string, pulumi.Output<string>> = {};

  constructor(name: string, args: ImagesArgs, opts?: pulumi.ComponentResourceOptions) {
    super("webchat:index:Images", name, {}, opts);
    this.repository = new aws.ecr.Repository(
      name,
      {
        imageScanningConfiguration: { scanOnPush: true },
        imageTagMutability: "MUTABLE",
        forceDelete: true, // `pulumi destroy` removes the images too
      },
      { parent: this },
    );
    new aws.ecr.LifecyclePolicy(
      name,
      {
        repository: this.repository.name,
        policy: JSON.stringify({
          rules: [
            {
              rulePriority: 1,
              description: "keep the last 5 images of each function, untagged ones included",
              selection: { tagStatus: "any", countType: "imageCountMoreThan", countNumber: 5 * args.functions.length },
              action: { type: "expire" },
            },
          ],
        }),
      },
      { parent: this },
    );
    const token = aws.ecr.getAuthorizationTokenOutput({ registryId: this.repository.registryId }, { parent: this });
    const root = path.resolve(__dirname, "..", "..");
    for (const fn of args.functions) {
      const image = new dockerBuild.Image(
        `${name}-${fn}`,
        {
          context: { location: root },
          dockerfile: { location: path.join(root, "Dockerfile") },
          buildArgs: { HANDLER: fn, ADOT_LAYER_URL: args.adotLayerUrl },
          platforms: [args.architecture === "arm64" ? "linux/arm64" : "linux/amd64"],
          push: true,
          tags: [pulumi.interpolate`${this.repository.repositoryUrl}:${fn}`],
          registries: [{ address: this.repository.repositoryUrl, username: token.userName, password: token.password }],
        },
        { parent: this },
      );
      this.refs[fn] = image.ref;
    }
    this.registerOutputs({ repository: this.repository.repositoryUrl });
  }
}
