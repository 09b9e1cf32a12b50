// Drive an A2A server with the official JS SDK client (@a2a-js/sdk), one scenario per run.
//
//   node js_client.mjs BASE_URL BINDING SCENARIO [ARG]
//
// BINDING (JSONRPC or HTTP+JSON) is the only transport the client factory is given, so the SDK
// must pick that interface from the card. The run prints ONE JSON object on stdout: what the SDK
// returned, serialised with the SDK's own toJSON (so enums read "TASK_STATE_COMPLETED"), and for
// an expected error the SDK error's class, semantic kind, reason and code. Exit 0; an unexpected
// exception prints {"error": ...} and exits 1. The Python test
// (tests/test_a2a_interop_js_client.py) asserts on that object.

import { randomUUID } from 'node:crypto';
import {
  AgentCard,
  CancelTaskRequest,
  GetTaskRequest,
  ListTasksRequest,
  ListTasksResponse,
  Message,
  SendMessageRequest,
  StreamResponse,
  SubscribeToTaskRequest,
  Task,
} from '@a2a-js/sdk';
import {
  ClientFactory,
  DefaultAgentCardResolver,
  JsonRpcTransportFactory,
  RestTransportFactory,
} from '@a2a-js/sdk/client';
import * as errors from '@a2a-js/sdk/errors';

const [baseUrl, binding, scenario, arg = 'hello js'] = process.argv.slice(2);
const TERMINAL = ['TASK_STATE_COMPLETED', 'TASK_STATE_FAILED', 'TASK_STATE_CANCELED', 'TASK_STATE_REJECTED'];
// Semantic error classes, most specific first; instanceof works across the SDK's bundles.
const SEMANTIC = [
  'TaskNotFoundError',
  'TaskNotCancelableError',
  'UnsupportedOperationError',
  'PushNotificationNotSupportedError',
  'ContentTypeNotSupportedError',
  'InvalidAgentResponseError',
  'ExtendedAgentCardNotConfiguredError',
  'ExtensionSupportRequiredError',
  'VersionNotSupportedError',
  'RequestMalformedError',
];

// A scenario that hangs (a server never ending a stream) must still answer, not stall the test.
setTimeout(() => fail(new Error(`scenario ${scenario} timed out`)), 20_000).unref();

function fail(err) {
  process.stdout.write(JSON.stringify({ error: String(err?.stack ?? err) }) + '\n');
  process.exit(1);
}

function factoryFor(name) {
  if (name === 'JSONRPC') return new JsonRpcTransportFactory();
  if (name === 'HTTP+JSON') return new RestTransportFactory();
  throw new Error(`unknown binding ${name}`);
}

async function makeClient() {
  return new ClientFactory({ transports: [factoryFor(binding)] }).createFromUrl(baseUrl);
}

// A send request as the SDK types it, built through its own fromJSON so every field is present.
function request(text, { returnImmediately = false, taskId = '', contextId = '', historyLength } = {}) {
  const configuration = { returnImmediately };
  if (historyLength !== undefined) configuration.historyLength = historyLength;
  return SendMessageRequest.fromJSON({
    message: { messageId: randomUUID(), role: 'ROLE_USER', parts: [{ text }], taskId, contextId },
    configuration,
  });
}

// The other requests, also built through the SDK's fromJSON: a hand-made partial object would
// leave fields undefined that the SDK's toJSON does not expect (an unset enum becomes
// "UNRECOGNIZED" on the wire).
const getReq = (id, historyLength) => GetTaskRequest.fromJSON({ id, historyLength });
const cancelReq = (id) => CancelTaskRequest.fromJSON({ id });
const subscribeReq = (id) => SubscribeToTaskRequest.fromJSON({ id });

// sendMessage answers a Task or a Message; say which, then serialise it.
function result(value) {
  if (value && 'messageId' in value) return { kind: 'message', message: Message.toJSON(value) };
  return { kind: 'task', task: Task.toJSON(value) };
}

// An SDK error as data: its class, the semantic class it is an instance of, and wire details.
// JSON-RPC stream errors arrive as a plain Error whose cause is the SDK error.
function describeError(err) {
  const sdkError = err instanceof errors.A2AError ? err : err?.cause;
  const out = { errorClass: err?.constructor?.name, message: err?.message };
  if (sdkError instanceof errors.A2AError) {
    out.sdkClass = sdkError.constructor.name;
    out.semantic = SEMANTIC.find((name) => sdkError instanceof errors[name]) ?? null;
    out.reason = sdkError.reason;
    out.transport = sdkError.transport;
    out.code = sdkError.envelopeCode ?? sdkError.statusCode;
    out.sdkMessage = sdkError.message;
  }
  return out;
}

// Run a call that should fail; what the SDK threw, or the value if it did not.
async function expectError(call) {
  try {
    const value = await call();
    return { unexpectedSuccess: value };
  } catch (err) {
    return describeError(err);
  }
}

async function collect(stream) {
  const events = [];
  for await (const event of stream) events.push(StreamResponse.toJSON(event));
  return events;
}

async function pollUntilTerminal(client, id) {
  for (let i = 0; i < 200; i++) {
    const task = await client.getTask(getReq(id));
    if (TERMINAL.includes(Task.toJSON(task).status?.state)) return { task: Task.toJSON(task), polls: i + 1 };
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`task ${id} never reached a terminal state`);
}

const scenarios = {
  // The card as the SDK's resolver normalises it, and the transport the factory chose from it.
  async card(client) {
    const card = await new DefaultAgentCardResolver().resolve(baseUrl);
    return {
      card: AgentCard.toJSON(card),
      clientCard: AgentCard.toJSON(await client.getAgentCard()),
      protocolVersion: client.protocolVersion,
    };
  },
  // Blocking send: the task as it stands when the server answers.
  async send(client) {
    return result(await client.sendMessage(request(arg)));
  },
  // returnImmediately: the first answer, then getTask polled until the task ends.
  async 'send-immediate'(client) {
    const first = Task.toJSON(await client.sendMessage(request(arg, { returnImmediately: true })));
    return { first, ...(await pollUntilTerminal(client, first.id)) };
  },
  async stream(client) {
    return { events: await collect(client.sendMessageStream(request(arg))) };
  },
  // A send limited to one history message, then getTask with no limit, historyLength 1 and
  // historyLength 0 on that finished two-message task.
  async 'get-task'(client) {
    const sent = Task.toJSON(await client.sendMessage(request(arg, { historyLength: 1 })));
    const get = async (historyLength) =>
      Task.toJSON(await client.getTask(getReq(sent.id, historyLength)));
    return { sent, full: await get(undefined), one: await get(1), zero: await get(0) };
  },
  // Cancel a running task, cancel it again, and read it back.
  async 'cancel-slow'(client) {
    const first = Task.toJSON(await client.sendMessage(request(`slow:${arg}`, { returnImmediately: true })));
    const canceled = Task.toJSON(await client.cancelTask(cancelReq(first.id)));
    const again = await expectError(() => client.cancelTask(cancelReq(first.id)));
    const after = Task.toJSON(await client.getTask(getReq(first.id)));
    return { first, canceled, again, after };
  },
  async 'task-not-found'(client) {
    const id = `no-such-task-${randomUUID()}`;
    return {
      get: await expectError(() => client.getTask(getReq(id))),
      cancel: await expectError(() => client.cancelTask(cancelReq(id))),
      subscribe: await expectError(() => collect(client.resubscribeTask(subscribeReq(id)))),
    };
  },
  // Four tasks in one context, listed two per page by following nextPageToken.
  async 'list-tasks'(client) {
    const first = Task.toJSON(await client.sendMessage(request(arg)));
    const ids = [first.id];
    for (let i = 0; i < 3; i++) {
      const more = await client.sendMessage(request(`${arg} ${i}`, { contextId: first.contextId }));
      ids.push(more.id);
    }
    const pages = [];
    let pageToken = '';
    do {
      const query = { contextId: first.contextId, pageSize: 2, pageToken };
      const page = await client.listTasks(ListTasksRequest.fromJSON(query));
      pages.push(ListTasksResponse.toJSON(page));
      pageToken = page.nextPageToken;
    } while (pageToken && pages.length < 10);
    return { contextId: first.contextId, ids, pages };
  },
  // An ask: task stops at INPUT_REQUIRED; the reply, sent into the same task, completes it.
  async 'follow-up'(client) {
    const first = Task.toJSON(await client.sendMessage(request(`ask:${arg}`)));
    const reply = request('blue', { taskId: first.id, contextId: first.contextId });
    const second = Task.toJSON(await client.sendMessage(reply));
    return { first, second };
  },
  // The same conversation with the reply streamed.
  async 'follow-up-stream'(client) {
    const first = Task.toJSON(await client.sendMessage(request(`ask:${arg}`)));
    const reply = request('green', { taskId: first.id, contextId: first.contextId });
    return { first, events: await collect(client.sendMessageStream(reply)) };
  },
  // A finished task accepts no more messages and has nothing to subscribe to.
  async 'terminal-task'(client) {
    const done = Task.toJSON(await client.sendMessage(request(arg)));
    const again = request('more', { taskId: done.id, contextId: done.contextId });
    return {
      done,
      send: await expectError(() => client.sendMessage(again)),
      subscribe: await expectError(() => collect(client.resubscribeTask(subscribeReq(done.id)))),
    };
  },
  // Subscribe to a running task; once the snapshot arrives, cancel it and read to the end.
  async subscribe(client) {
    const first = Task.toJSON(await client.sendMessage(request(`slow:${arg}`, { returnImmediately: true })));
    const events = [];
    for await (const event of client.resubscribeTask(subscribeReq(first.id))) {
      events.push(StreamResponse.toJSON(event));
      if (event.payload?.$case === 'task') await client.cancelTask(cancelReq(first.id));
    }
    return { first, events };
  },
};

try {
  const run = scenarios[scenario];
  if (!run) throw new Error(`unknown scenario ${scenario}`);
  const client = await makeClient();
  const out = await run(client);
  out.transport = client.transport.protocolName;
  out.endpoint = client.transport.endpoint;
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(0);
} catch (err) {
  fail(err);
}
