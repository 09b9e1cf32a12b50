// An official @a2a-js/sdk 1.3 server with an echo agent: the JS peer our client is tested against.
//
// Run as `node js_echo_server.mjs PORT [--rest-first]` (PORT may be 0: the OS picks one). Once it
// listens on 127.0.0.1 it prints `LISTENING <port>` on stdout so a test can read the port back.
//
// The agent behaves exactly like sdk_echo_server.py (the official Python SDK's server), so the
// same tests can run against both:
//
// - `msg:<text>`   answers with a direct Message `echo: msg:<text>` (no task);
// - `slow:<text>`  works for ~30 s (cancellable), then completes like the default;
// - `ask:<text>`   moves the task to INPUT_REQUIRED with the question `<text>`; the follow-up
//                  message on that task completes it with artifact `answer: <reply>`;
// - `fail:<text>`  fails the task with status message `<text>`;
// - `data:<json>`  completes with an artifact holding one data part (the parsed JSON);
// - anything else  completes with artifact `a1` = `echo: ` + the text (two chunks) and status
//                  message `done`.

import http from 'node:http';
import { randomUUID } from 'node:crypto';

import express from 'express';
import { AgentEvent, DefaultRequestHandler, InMemoryTaskStore } from '@a2a-js/sdk/server';
import {
  UserBuilder,
  agentCardHandler,
  jsonRpcHandler,
  restHandler,
} from '@a2a-js/sdk/server/express';

// Numeric values of the SDK's proto enums (TaskState, Role); the server serialises them by name.
const State = { SUBMITTED: 1, WORKING: 2, COMPLETED: 3, FAILED: 4, CANCELED: 5, INPUT_REQUIRED: 6 };
const ROLE_AGENT = 2;

const now = () => new Date().toISOString();

// The SDK's types are ts-proto objects: every field present, parts as a `$case` union.
function textPart(text) {
  return { content: { $case: 'text', value: text }, metadata: undefined, filename: '', mediaType: '' };
}

function dataPart(value) {
  return { content: { $case: 'data', value }, metadata: undefined, filename: '', mediaType: '' };
}

function agentMessage(text, contextId, taskId = '') {
  return {
    messageId: randomUUID(),
    contextId,
    taskId,
    role: ROLE_AGENT,
    parts: [textPart(text)],
    metadata: undefined,
    extensions: [],
    referenceTaskIds: [],
  };
}

function userText(message) {
  return message.parts
    .filter((part) => part.content?.$case === 'text')
    .map((part) => part.content.value)
    .join('\n');
}

class EchoExecutor {
  // Running `slow:` tasks, so cancelTask can cut their wait short.
  #running = new Map();
  // Each task's context, for the CANCELED update (cancelTask is given only the task id).
  #contexts = new Map();

  async execute(requestContext, eventBus) {
    const message = requestContext.userMessage;
    const text = userText(message);
    const { taskId, contextId } = requestContext;
    const current = requestContext.task;
    this.#contexts.set(taskId, contextId);

    if (text.startsWith('msg:') && !current) {
      eventBus.publish(AgentEvent.message(agentMessage(`echo: ${text}`, contextId)));
      return;
    }

    const status = (state, reply) => {
      eventBus.publish(
        AgentEvent.statusUpdate({
          taskId,
          contextId,
          status: { state, message: reply, timestamp: now() },
          metadata: undefined,
        }),
      );
    };
    const artifact = (artifactId, name, parts, append = false, lastChunk = false) => {
      eventBus.publish(
        AgentEvent.artifactUpdate({
          taskId,
          contextId,
          artifact: { artifactId, name, description: '', parts, metadata: undefined, extensions: [] },
          append,
          lastChunk,
          metadata: undefined,
        }),
      );
    };

    // Unlike the Python SDK, the JS one requires a Task (or Message) as the first event of every
    // execution, follow-up turns included: a follow-up republishes the stored task, as WORKING
    // (a task still INPUT_REQUIRED would end a blocking call's wait at once).
    eventBus.publish(
      AgentEvent.task(
        current
          ? { ...current, status: { state: State.WORKING, message: undefined, timestamp: now() } }
          : {
              id: taskId,
              contextId,
              status: { state: State.SUBMITTED, message: undefined, timestamp: now() },
              artifacts: [],
              history: [message],
              metadata: undefined,
            },
      ),
    );
    status(State.WORKING, undefined);

    if (current?.status?.state === State.INPUT_REQUIRED) {
      artifact('a1', 'answer', [textPart(`answer: ${text}`)]);
      status(State.COMPLETED, agentMessage('done', contextId, taskId));
      return;
    }
    if (text.startsWith('slow:')) {
      const cancelled = await this.#wait(taskId, 30_000);
      if (cancelled) return; // cancelTask already published CANCELED
    }
    if (text.startsWith('ask:')) {
      status(State.INPUT_REQUIRED, agentMessage(text.slice('ask:'.length), contextId, taskId));
      return;
    }
    if (text.startsWith('fail:')) {
      status(State.FAILED, agentMessage(text.slice('fail:'.length), contextId, taskId));
      return;
    }
    if (text.startsWith('data:')) {
      artifact('d1', 'data', [dataPart(JSON.parse(text.slice('data:'.length)))]);
      status(State.COMPLETED, undefined);
      return;
    }
    artifact('a1', 'echo', [textPart('echo: ')]);
    artifact('a1', '', [textPart(text)], true, true);
    status(State.COMPLETED, agentMessage('done', contextId, taskId));
  }

  async cancelTask(taskId, eventBus) {
    this.#running.get(taskId)?.();
    eventBus.publish(
      AgentEvent.statusUpdate({
        taskId,
        contextId: this.#contexts.get(taskId) ?? '',
        status: { state: State.CANCELED, message: undefined, timestamp: now() },
        metadata: undefined,
      }),
    );
  }

  // Resolves true if cancelTask ended the wait, false once `ms` have passed.
  #wait(taskId, ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#running.delete(taskId);
        resolve(false);
      }, ms);
      this.#running.set(taskId, () => {
        clearTimeout(timer);
        this.#running.delete(taskId);
        resolve(true);
      });
    });
  }
}

function buildCard(baseUrl, restFirst) {
  const iface = (path, protocolBinding) => ({
    url: `${baseUrl}${path}`,
    protocolBinding,
    tenant: '',
    protocolVersion: '1.0',
  });
  const interfaces = [iface('/a2a/jsonrpc', 'JSONRPC'), iface('/a2a/rest', 'HTTP+JSON')];
  return {
    name: 'Echo Agent',
    description: 'Echoes text back (@a2a-js/sdk 1.3.0 test server)',
    supportedInterfaces: restFirst ? interfaces.reverse() : interfaces,
    provider: undefined,
    version: '0.1.0',
    capabilities: { streaming: true, pushNotifications: false, extensions: [] },
    securitySchemes: {},
    securityRequirements: [],
    defaultInputModes: ['text/plain'],
    defaultOutputModes: ['text/plain'],
    skills: [
      {
        id: 'echo',
        name: 'Echo',
        description: 'Echo the input',
        tags: ['echo'],
        examples: ['hello'],
        inputModes: [],
        outputModes: [],
        securityRequirements: [],
      },
    ],
    signatures: [],
  };
}

function buildApp(baseUrl, restFirst) {
  const card = buildCard(baseUrl, restFirst);
  const handler = new DefaultRequestHandler(card, new InMemoryTaskStore(), new EchoExecutor());
  const options = { requestHandler: handler, userBuilder: UserBuilder.noAuthentication };
  const app = express();
  app.use('/.well-known/agent-card.json', agentCardHandler({ agentCardProvider: handler }));
  app.use('/a2a/jsonrpc', jsonRpcHandler(options));
  app.use('/a2a/rest', restHandler(options));
  return app;
}

const port = Number(process.argv[2] ?? 0);
const restFirst = process.argv.includes('--rest-first');
// The card names the real port, known only once listening: the server delegates to the app,
// which is built before the port is announced (so before any test request can arrive).
let app;
const server = http.createServer((req, res) => app(req, res));
server.listen(port, '127.0.0.1', () => {
  const actual = server.address().port;
  app = buildApp(`http://127.0.0.1:${actual}`, restFirst);
  process.stdout.write(`LISTENING ${actual}\n`);
});
process.on('SIGTERM', () => process.exit(0));
