// A gRPC-web client for the gateway tests: Connect's gRPC-web transport (fetch, as a browser does), with the
// service loaded at run time from a FileDescriptorSet, so no generated code is needed.
//
//   node client.mjs <base-url> <descriptor-set.pb> <Method> '<request JSON>' [max-messages] [token]
//
// Prints one JSON line per response message ({"message": ...}), then {"status": "ok"} or
// {"error": {"code": ..., "message": ...}}.
import { readFileSync } from "node:fs";
import { createFileRegistry, fromBinary, fromJson, toJson } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";

const [baseUrl, descriptorPath, methodName, requestJson, maxArg, token] = process.argv.slice(2);
const maxMessages = maxArg ? Number(maxArg) : Infinity;
const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(descriptorPath)));
const service = registry.getService("riskwatch.v1.GatewayService");
const method = service.methods.find((m) => m.name === methodName);
if (!method) throw new Error(`no method ${methodName}`);

const transport = createGrpcWebTransport({ baseUrl, useBinaryFormat: true });
const client = createClient(service, transport);
const request = fromJson(method.input, JSON.parse(requestJson || "{}"), { registry });
const headers = token ? { authorization: `Bearer ${token}` } : {};
const print = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const asJson = (message) => toJson(method.output, message, { registry });

const abort = new AbortController();
try {
  if (method.methodKind === "server_streaming") {
    let count = 0;
    for await (const message of client[method.localName](request, { headers, signal: abort.signal })) {
      print({ message: asJson(message) });
      if (++count >= maxMessages) {
        abort.abort();
        break;
      }
    }
  } else {
    print({ message: asJson(await client[method.localName](request, { headers })) });
  }
  print({ status: "ok" });
} catch (err) {
  const error = ConnectError.from(err);
  if (error.code === Code.Canceled && abort.signal.aborted) print({ status: "ok" });
  else print({ error: { code: Code[error.code], message: error.rawMessage } });
}
