// The reference a Node user would pick, timed on this machine: aws-jwt-verify's
// CognitoJwtVerifier.verifySync on a Cognito-shaped RS256 id token (RSA-2048,
// e = 65537, one group), its key set cached beforehand, so each call parses
// the token, checks the signature (node:crypto, OpenSSL) and the claims.
// Batches as in tests/examples/verify_ab.rs (200 calls, 40 batches, one
// warm-up); run it in the same hour as verify_ab (BENCHMARKS.md):
//
//   npm ci --prefix tests/aws-jwt-verify && node tests/aws-jwt-verify/bench.mjs
import { generateKeyPairSync, createSign } from "node:crypto";
import { CognitoJwtVerifier } from "aws-jwt-verify";

const userPoolId = "eu-west-1_Bench1234";
const clientId = "bench-client";
const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048, publicExponent: 65537 });
const jwk = { ...publicKey.export({ format: "jwk" }), kid: "bench-kid", alg: "RS256", use: "sig" };
const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
const now = Math.floor(Date.now() / 1000);
const header = b64({ alg: "RS256", kid: "bench-kid", typ: "JWT" });
const claims = b64({
  sub: "bench-user", "cognito:groups": ["integration-1"], iss: `https://cognito-idp.eu-west-1.amazonaws.com/${userPoolId}`,
  aud: clientId, token_use: "id", auth_time: now, iat: now, exp: now + 3600,
});
const signature = createSign("RSA-SHA256").update(`${header}.${claims}`).sign(privateKey).toString("base64url");
const token = `${header}.${claims}.${signature}`;

const verifier = CognitoJwtVerifier.create({ userPoolId, tokenUse: "id", clientId });
verifier.cacheJwks({ keys: [jwk] });
verifier.verifySync(token);

const batch = 200, batches = 40, perBatch = [];
for (let round = 0; round <= batches; round++) {
  const start = process.hrtime.bigint();
  for (let i = 0; i < batch; i++) verifier.verifySync(token);
  if (round > 0) perBatch.push(Number(process.hrtime.bigint() - start) / batch / 1000);
}
perBatch.sort((a, b) => a - b);
console.log(`aws-jwt-verify verifySync: fastest batch ${perBatch[0].toFixed(1)} µs, median ${perBatch[perBatch.length >> 1].toFixed(1)} µs per token`);
