// The OpenID provider tests/oidc.rs signs in at: node-oidc-provider (an
// OpenID Certified implementation) with two clients, short-lived codes and
// ID tokens, RP-initiated logout, and an interaction that signs in the
// account (and the amr/acr) the test chose last with POST /test/next.
// It listens on a free port and prints "ready PORT". The gateways of the
// tests listen on ports chosen after it starts, so its clients accept the
// callback and the root of app.test and app.localhost on any port.
//
//   CLIENT_SECRET=... [CONFORM=1] node tests/oidc/provider.mjs
import http from "node:http";
import Provider from "oidc-provider";

const TEST_HOSTS = ["app.test", "app.localhost"];

const accounts = {
  alice: { sub: "alice", preferred_username: "alice", name: "Alice Liddell", email: "alice@example.com", groups: ["staff", "admins"] },
  bob: { sub: "bob", preferred_username: "bob", name: "Bob", email: "bob@example.com", groups: ["staff"] },
};
let next = { account: "alice", amr: ["pwd"], acr: undefined };

const client = (id, secret) => ({
  client_id: id,
  client_secret: secret,
  redirect_uris: ["http://app.test/.stepgate/oidc/callback"],
  post_logout_redirect_uris: ["http://app.test/"],
  grant_types: ["authorization_code"],
  response_types: ["code"],
});

const server = http.createServer();
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const port = server.address().port;
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [client("stepgate", process.env.CLIENT_SECRET), client("other", "other secret")],
  claims: {
    acr: null,
    amr: null,
    auth_time: null,
    sid: null,
    // amr, acr and auth_time in every ID token, as Entra ID and Okta send them.
    openid: ["sub", "acr", "amr", "auth_time"],
    profile: ["name", "preferred_username", "groups"],
    email: ["email"],
  },
  // Profile claims in the ID token itself, not only at the UserInfo endpoint
  // (unless CONFORM=1: then at the UserInfo endpoint only).
  conformIdTokenClaims: process.env.CONFORM === "1",
  acrValues: ["urn:example:pwd", "urn:example:mfa"],
  findAccount: async (ctx, id) => accounts[id] && { accountId: id, claims: async () => accounts[id] },
  features: { devInteractions: { enabled: false }, rpInitiatedLogout: { enabled: true } },
  pkce: { required: () => true },
  ttl: { AuthorizationCode: 60, IdToken: 60, Interaction: 600, Session: 600, Grant: 600 },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  cookies: { keys: ["test cookie key"] },
});

function body(req) {
  return new Promise((resolve) => {
    let data = "";
    req.on("data", (chunk) => (data += chunk));
    req.on("end", () => resolve(data));
  });
}

const onTestHost = (uri, path) => {
  const url = new URL(uri);
  return url.protocol === "http:" && TEST_HOSTS.includes(url.hostname) && url.pathname === path && !url.search;
};
provider.Client.prototype.redirectUriAllowed = (uri) => onTestHost(uri, "/.stepgate/oidc/callback");
provider.Client.prototype.postLogoutRedirectUriAllowed = (uri) => onTestHost(uri, "/");

const callback = provider.callback();
server.on("request", async (req, res) => {
    try {
      if (req.method === "POST" && req.url === "/test/next") {
        next = JSON.parse(await body(req));
        res.end("ok");
        return;
      }
      if (req.url.startsWith("/interaction/")) {
        const { params } = await provider.interactionDetails(req, res);
        const grant = new provider.Grant({ accountId: next.account, clientId: params.client_id });
        grant.addOIDCScope(params.scope);
        const grantId = await grant.save();
        const login = { accountId: next.account, amr: next.amr, acr: next.acr };
        await provider.interactionFinished(req, res, { login, consent: { grantId } }, { mergeWithLastSubmission: false });
        return;
      }
      callback(req, res);
    } catch (err) {
      res.statusCode = 500;
      res.end(String(err));
    }
});
console.log(`ready ${port}`);
