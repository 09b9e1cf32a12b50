// Send one A2A request with the official JS SDK client (@a2a-js/sdk) and print what it got.
//
//   node js_protocol_client.mjs BASE_URL BINDING send|stream REQUEST_JSON
//
// REQUEST_JSON is a SendMessageRequest in ProtoJSON (built by the Python test), parsed with the
// SDK's own fromJSON. BINDING (JSONRPC or HTTP+JSON) is the only transport the client factory
// is given. Prints ONE JSON object: for send, {"result": {"task": ...} | {"message": ...}}; for
// stream, {"events": [StreamResponse, ...]}; each serialised with the SDK's toJSON. An error
// prints {"error": ...} and exits 1.

import { Message, SendMessageRequest, StreamResponse, Task } from '@a2a-js/sdk';
import { ClientFactory, JsonRpcTransportFactory, RestTransportFactory } from '@a2a-js/sdk/client';

const [baseUrl, binding, mode, requestJson] = process.argv.slice(2);

setTimeout(() => fail(new Error(`${mode} timed out`)), 20_000).unref();

function fail(err) {
  process.stdout.write(JSON.stringify({ error: String(err?.stack ?? err) }) + '\n');
  process.exit(1);
}

function factoryFor(name) {
  if (name === 'JSONRPC') return new JsonRpcTransportFactory();
  if (name === 'HTTP+JSON') return new RestTransportFactory();
  throw new Error(`unknown binding ${name}`);
}

try {
  const client = await new ClientFactory({ transports: [factoryFor(binding)] }).createFromUrl(baseUrl);
  const request = SendMessageRequest.fromJSON(JSON.parse(requestJson));
  const out = { transport: client.transport.protocolName };
  if (mode === 'send') {
    const value = await client.sendMessage(request);
    out.result = 'messageId' in value ? { message: Message.toJSON(value) } : { task: Task.toJSON(value) };
  } else if (mode === 'stream') {
    out.events = [];
    for await (const event of client.sendMessageStream(request)) out.events.push(StreamResponse.toJSON(event));
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(0);
} catch (err) {
  fail(err);
}
