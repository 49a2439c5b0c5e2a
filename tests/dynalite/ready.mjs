// Readiness probe for the local dynalite server (used by scripts/dynalite).
//
// Sends one SigV4-signed DynamoDB ListTables request and exits 0 when the
// server answers HTTP 200, 1 otherwise. Only node:crypto and node:http, so it
// runs before (and without) any AWS SDK or CLI.
//
//   node tests/dynalite/ready.mjs [ENDPOINT]
//
// ENDPOINT defaults to $AWS_ENDPOINT_URL_DYNAMODB, then http://127.0.0.1:8000.
// Credentials and region come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
// AWS_REGION, defaulting to the dummy values local/local/us-east-1.

import { createHash, createHmac } from "node:crypto";
import http from "node:http";

const endpoint = new URL(
  process.argv[2] || process.env.AWS_ENDPOINT_URL_DYNAMODB || "http://127.0.0.1:8000",
);
const accessKey = process.env.AWS_ACCESS_KEY_ID || "local";
const secretKey = process.env.AWS_SECRET_ACCESS_KEY || "local";
const region = process.env.AWS_REGION || "us-east-1";
const service = "dynamodb";

const sha256 = (data) => createHash("sha256").update(data, "utf8").digest("hex");
const hmac = (key, data) => createHmac("sha256", key).update(data, "utf8").digest();

const body = "{}";
const amzDate = new Date().toISOString().replace(/[:-]|\.\d{3}/g, ""); // YYYYMMDDTHHMMSSZ
const date = amzDate.slice(0, 8);
const headers = {
  "content-type": "application/x-amz-json-1.0",
  host: endpoint.host,
  "x-amz-date": amzDate,
  "x-amz-target": "DynamoDB_20120810.ListTables",
};
const signedHeaders = Object.keys(headers).sort().join(";");
const canonicalHeaders = Object.keys(headers).sort().map((k) => `${k}:${headers[k]}\n`).join("");
const canonicalRequest = ["POST", "/", "", canonicalHeaders, signedHeaders, sha256(body)].join("\n");
const scope = `${date}/${region}/${service}/aws4_request`;
const stringToSign = ["AWS4-HMAC-SHA256", amzDate, scope, sha256(canonicalRequest)].join("\n");
let key = hmac(`AWS4${secretKey}`, date);
for (const part of [region, service, "aws4_request"]) key = hmac(key, part);
const signature = createHmac("sha256", key).update(stringToSign, "utf8").digest("hex");

const req = http.request(
  {
    hostname: endpoint.hostname,
    port: endpoint.port || 80,
    path: "/",
    method: "POST",
    timeout: 2000,
    headers: {
      ...headers,
      "content-length": Buffer.byteLength(body),
      authorization:
        `AWS4-HMAC-SHA256 Credential=${accessKey}/${scope}, ` +
        `SignedHeaders=${signedHeaders}, Signature=${signature}`,
    },
  },
  (res) => {
    res.resume();
    res.on("end", () => process.exit(res.statusCode === 200 ? 0 : 1));
  },
);
req.on("timeout", () => req.destroy(new Error("timeout")));
req.on("error", () => process.exit(1));
req.end(body);
