// Sign-in with Cognito (webchat:cognito): a user pool, and an app client whose ID tokens the
// authorizer accepts. The issuer is the pool's `https://cognito-idp.<region>.amazonaws.com/<id>`,
// the audience the client's id: an ID token's `aud` (an access token has none, but its
// `client_id` is the same id, which the authorizer accepts too).
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";

/** The app client's sign-in flows: a password from the AWS CLI (USER_PASSWORD_AUTH, over TLS to
 * Cognito), SRP for SDKs that never send the password, and refreshing a token. */
export const AUTH_FLOWS = ["ALLOW_USER_PASSWORD_AUTH", "ALLOW_USER_SRP_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"] as const;

export class CognitoSignIn extends pulumi.ComponentResource {
  public readonly pool: aws.cognito.UserPool;
  public readonly client: aws.cognito.UserPoolClient;
  /** The tokens' `iss` (JWT_ISSUER). */
  public readonly issuer: pulumi.Output<string>;
  /** The tokens' `aud` (JWT_AUDIENCE): the client's id. */
  public readonly audience: pulumi.Output<string>;

  constructor(name: string, opts?: pulumi.ComponentResourceOptions) {
    super("webchat:index:CognitoSignIn", name, {}, opts);
    this.pool = new aws.cognito.UserPool(
      name,
      {
        // password sign-in is all the stack uses, and Lite has it (Essentials is the default)
        userPoolTier: "LITE",
        // people sign in with their email address, in any case
        usernameAttributes: ["email"],
        usernameConfiguration: { caseSensitive: false },
        // The client id is public (every client holds it), so open sign-up would let anyone
        // make an account: the stack's operator creates users, with AWS credentials.
        adminCreateUserConfig: { allowAdminCreateUserOnly: true },
        passwordPolicy: {
          minimumLength: 12,
          requireLowercase: true,
          requireUppercase: true,
          requireNumbers: true,
          requireSymbols: false,
          temporaryPasswordValidityDays: 7,
        },
        mfaConfiguration: "OFF",
        // no verified email or phone to send a code to: the operator resets passwords
        accountRecoverySetting: { recoveryMechanisms: [{ name: "admin_only", priority: 1 }] },
        // `pulumi destroy` deletes the pool, and its users with it
        deletionProtection: "INACTIVE",
      },
      { parent: this },
    );
    this.client = new aws.cognito.UserPoolClient(
      name,
      {
        userPoolId: this.pool.id,
        // the CLI and the browser page can keep no secret; with one, every sign-in would need
        // its SECRET_HASH
        generateSecret: false,
        explicitAuthFlows: [...AUTH_FLOWS],
        // a wrong user name fails as a wrong password does: no probing for who has an account
        preventUserExistenceErrors: "ENABLED",
        enableTokenRevocation: true,
      },
      { parent: this },
    );
    // the pool's endpoint is `cognito-idp.<region>.amazonaws.com/<id>`, its tokens' iss without
    // the scheme
    this.issuer = pulumi.interpolate`https://${this.pool.endpoint}`;
    this.audience = this.client.id;
    this.registerOutputs({ issuer: this.issuer, audience: this.audience });
  }
}

/** What the `getToken` output says with a Cognito pool: the AWS CLI commands that create a user,
 * get an ID token for them, and connect with it. */
export function cognitoTokenInstructions(where: { region: string; poolId: string; clientId: string; url: string }): string {
  const { region, poolId, clientId, url } = where;
  return [
    "# Set EMAIL, NAME and PASSWORD (12 or more characters, upper and lower case and a digit, no comma).",
    "# Once per person, with AWS credentials (the pool takes no self sign-up):",
    `aws cognito-idp admin-create-user --region ${region} --user-pool-id ${poolId} --username "$EMAIL" --user-attributes Name=name,Value="$NAME" --message-action SUPPRESS`,
    `aws cognito-idp admin-set-user-password --region ${region} --user-pool-id ${poolId} --username "$EMAIL" --password "$PASSWORD" --permanent`,
    "# An ID token, valid for an hour (Cognito asks no AWS credentials for this one):",
    `TOKEN=$(aws cognito-idp initiate-auth --region ${region} --client-id ${clientId} --auth-flow USER_PASSWORD_AUTH --auth-parameters USERNAME="$EMAIL",PASSWORD="$PASSWORD" --query AuthenticationResult.IdToken --output text)`,
    "# Connect with it:",
    ...connectCommands(url),
  ].join("\n");
}

/** What the `getToken` output says with an issuer of the stage's choosing: which token, and how
 * to connect with it (that issuer's own documentation says how to get one). */
export function issuerTokenInstructions(where: { issuer: string; audience: string; url: string }): string {
  return [
    `# Put in TOKEN a token of ${where.issuer} whose aud (or, for an access token, client_id) is`,
    `# ${where.audience}, from that issuer. Connect with it:`,
    ...connectCommands(where.url),
  ].join("\n");
}

/** The three ways to connect with $TOKEN: wscat, the terminal client, the chat page. */
function connectCommands(url: string): string[] {
  return [
    `npx wscat -c "${url}?token=$TOKEN"`,
    `webchat connect ${url} --token "$TOKEN"`,
    `# or webchat-local's chat page at http://127.0.0.1:3001/?url=${url}#token=<the token>`,
  ];
}
