// One ECR repository, and one image per function built from the repository's Dockerfile. The
// Dockerfile's compile stage does not depend on the function, so the build compiles once and
// every image after the first only copies its binary (see the Dockerfile's header).
import * as aws from "@pulumi/aws";
import * as dockerBuild from "@pulumi/docker-build";
import * as pulumi from "@pulumi/pulumi";
import * as path from "path";

export interface ImagesArgs {
  functions: readonly string[];
  architecture: "arm64" | "x86_64";
  /** SHA-256 (hex) of the ADOT layer zip at build/adot-layer/<sha256>.zip: see adot.ts. */
  adotLayerSha256: pulumi.Input<string>;
}

export class Images extends pulumi.ComponentResource {
  public readonly repository: aws.ecr.Repository;
  /** Per function, `<repository>@sha256:<digest>`: the image by content, a form Lambda accepts. */
  public readonly uris: Record<string, pulumi.Output<string>> = {};

  constructor(name: string, args: ImagesArgs, opts?: pulumi.ComponentResourceOptions) {
    super("webchat:index:Images", name, {}, opts);
    this.repository = new aws.ecr.Repository(
      name,
      {
        imageScanningConfiguration: { scanOnPush: true },
        imageTagMutability: "MUTABLE",
        forceDelete: true, // `pulumi destroy` removes the images with the repository
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
    // A fresh token on every run; docker-build compares only the registry's address and user name,
    // so a new password alone changes nothing.
    const token = aws.ecr.getAuthorizationTokenOutput({ registryId: this.repository.registryId }, { parent: this });
    const root = path.resolve(__dirname, "..", "..");
    for (const fn of args.functions) {
      const image = new dockerBuild.Image(
        `${name}-${fn}`,
        {
          context: { location: root },
          dockerfile: { location: path.join(root, "Dockerfile") },
          buildArgs: { HANDLER: fn, ADOT_LAYER_SHA256: args.adotLayerSha256 },
          platforms: [args.architecture === "arm64" ? "linux/arm64" : "linux/amd64"],
          push: true,
          // A preview (the one before `pulumi up` asks to go on, too) does not compile: the
          // compile is minutes, and it runs once, in the update. A broken build fails there.
          buildOnPreview: false,
          tags: [pulumi.interpolate`${this.repository.repositoryUrl}:${fn}`],
          registries: [{ address: this.repository.repositoryUrl, username: token.userName, password: token.password }],
        },
        {
          parent: this,
          // docker-build deletes an image through a Docker client built from its saved state,
          // with the registry token saved there, which ECR expires after 12 hours (v0.0.22 then
          // ignores the failure and leaves the manifest). The repository's forceDelete removes
          // the images anyway, and its lifecycle policy expires old ones, so Pulumi drops these
          // from state without calling the provider: `pulumi destroy` works at any age, on a
          // machine without Docker.
          retainOnDelete: true,
        },
      );
      // docker-build's `ref` is `repo:tag@sha256:…`, which Lambda refuses; the digest alone is
      // exact and changes only when the image does.
      this.uris[fn] = pulumi.interpolate`${this.repository.repositoryUrl}@${image.digest}`;
    }
    this.registerOutputs({ repository: this.repository.repositoryUrl });
  }
}
