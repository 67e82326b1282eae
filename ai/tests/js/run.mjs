// The AI SDK's own transports against a live chatsvc: `node run.mjs <scenario>`, options as JSON on
// stdin, one JSON result on stdout. Driven by ai/tests/test_ai_sdk_clients.py (ai/tests/ai_sdk.py).
import {
  AbstractChat,
  DefaultChatTransport,
  WebSocketChatTransport,
  readUIMessageStream,
  safeValidateWebSocketChatTransportRequest,
} from 'ai';
import { WebSocket } from 'ws';

const options = JSON.parse(await new Response(process.stdin).text());

function describe(error) {
  return {
    name: error?.name,
    message: error?.message ?? String(error),
    statusCode: error?.statusCode,
    responseBody: error?.responseBody,
  };
}

// Node 20 has no global WebSocket: the transport is given the `ws` package's class, opening the
// socket as a page of the service would (its Origin, and its session cookie when there is one).
function webSocketClass({ origin, cookie }) {
  if (origin == null && cookie == null) {
    return WebSocket;
  }
  return class PageWebSocket extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols, { origin, headers: cookie == null ? {} : { cookie } });
    }
  };
}

function transport(transportOptions) {
  const { kind, baseUrl, headers = {}, body, origin, cookie } = transportOptions;
  if (kind === 'http') {
    return new DefaultChatTransport({ api: `${baseUrl}/api/ai/chat`, headers, body });
  }
  return new WebSocketChatTransport({
    url: `${baseUrl.replace(/^http/, 'ws')}/ws/ai/chat`,
    headers,
    body,
    webSocket: webSocketClass({ origin, cookie }),
  });
}

// Read a UI message stream to its end as `useChat` does (readUIMessageStream), keeping every chunk;
// `leaveAfterDeltas`: call `leave()` once that many text deltas have arrived.
async function readAnswer(stream, { leaveAfterDeltas, leave } = {}) {
  const chunks = [];
  const errors = [];
  let deltas = 0;
  const recorded = stream.pipeThrough(
    new TransformStream({
      transform(chunk, controller) {
        chunks.push(chunk);
        controller.enqueue(chunk);
        if (chunk.type === 'text-delta' && ++deltas === leaveAfterDeltas) {
          leave();
        }
      },
    }),
  );
  let message = null;
  for await (const snapshot of readUIMessageStream({
    stream: recorded,
    onError: error => errors.push(describe(error)),
  })) {
    message = snapshot;
  }
  return { message, chunks, errors };
}

function userMessage(text) {
  return { id: `user-${Math.random().toString(36).slice(2)}`, role: 'user', parts: [{ type: 'text', text }] };
}

// One request: `send` (a message, or a regenerate) or `reconnect`; `leaveAfterDeltas` with
// `leaveBy`: "abort" (the request's abort signal: useChat's stop()) or "close" (the socket closes:
// a reload). A refused request is `{error}`; a reconnect with nothing running is `{result: null}`.
async function request(chat, step) {
  const abortController = new AbortController();
  const leave =
    step.leaveBy === 'close' ? () => chat.close() : () => abortController.abort();
  let stream;
  try {
    if (step.action === 'reconnect') {
      stream = await chat.reconnectToStream({ chatId: step.chatId, abortSignal: abortController.signal });
      if (stream === null) {
        return { result: null };
      }
    } else {
      stream = await chat.sendMessages({
        trigger: step.trigger ?? 'submit-message',
        chatId: step.chatId,
        messageId: undefined,
        messages: step.messages ?? [userMessage(step.text)],
        abortSignal: abortController.signal,
      });
    }
  } catch (error) {
    return { error: describe(error) };
  }
  return readAnswer(stream, { leaveAfterDeltas: step.leaveAfterDeltas, leave });
}

// `steps` run in order, each on the transport it names (`transports[step.transport ?? 0]`); steps
// with the same `parallel` number run together. A new transport per index is a new page (or socket).
async function run({ transports: transportOptions, steps }) {
  const chats = transportOptions.map(transport);
  const results = [];
  for (let index = 0; index < steps.length; ) {
    const group = [steps[index]];
    while (
      steps[index].parallel != null &&
      index + group.length < steps.length &&
      steps[index + group.length].parallel === steps[index].parallel
    ) {
      group.push(steps[index + group.length]);
    }
    results.push(...(await Promise.all(group.map(step => request(chats[step.transport ?? 0], step)))));
    index += group.length;
  }
  for (const chat of chats) {
    chat.close?.();
  }
  return results;
}

// `useChat` is React state around the AI SDK's `Chat` (an `AbstractChat`): this is the same chat with
// plain state, as a page would hold it.
class PageState {
  constructor(messages = []) {
    this.messages = messages;
    this.status = 'ready';
    this.error = undefined;
  }
  pushMessage(message) {
    this.messages = [...this.messages, message];
  }
  popMessage() {
    this.messages = this.messages.slice(0, -1);
  }
  replaceMessage(index, message) {
    this.messages = this.messages.map((existing, i) => (i === index ? message : existing));
  }
  snapshot(value) {
    return structuredClone(value);
  }
}

class PageChat extends AbstractChat {
  constructor({ messages, ...init }) {
    super({ ...init, state: new PageState(messages) });
  }
}

function until(predicate) {
  return new Promise(resolve => {
    const check = () => (predicate() ? resolve() : setTimeout(check, 10));
    check();
  });
}

// A page sends a message, is reloaded once the answer has begun (HTTP: its request is cancelled; a
// WebSocket: its socket closes), and the new page does what `useChat({id, messages, resume: true})`
// does: it loads the chat's messages (GET /api/ai/chat/<id>) and resumes the stream.
async function reload({ transport: transportOptions, chatId, text }) {
  const firstTransport = transport(transportOptions);
  const first = new PageChat({ id: chatId, transport: firstTransport, messages: [] });
  const sent = first.sendMessage({ text });
  await until(() => first.messages.at(-1)?.role === 'assistant' && first.messages.at(-1).parts.length > 0);
  const before = first.messages.at(-1);
  if (transportOptions.kind === 'http') {
    await first.stop();
  } else {
    firstTransport.close();
  }
  await sent.catch(() => {});

  const response = await fetch(`${transportOptions.baseUrl}/api/ai/chat/${chatId}`, {
    headers: transportOptions.headers,
  });
  const initial = await response.json();
  const errors = [];
  const pageTransport = transport(transportOptions);
  const page = new PageChat({
    id: chatId,
    transport: pageTransport,
    messages: initial.messages,
    onError: error => errors.push(describe(error)),
  });
  await page.resumeStream();
  pageTransport.close?.();
  return { before, initial: initial.messages, messages: page.messages, status: page.status, errors };
}

async function validate({ frames }) {
  return Promise.all(
    frames.map(async value => {
      const result = await safeValidateWebSocketChatTransportRequest({ value });
      return result.success ? { success: true } : { success: false, error: result.error.message };
    }),
  );
}

const scenarios = { run, reload, validate };
process.stdout.write(JSON.stringify(await scenarios[process.argv[2]](options)) + '\n');
process.exit(0);
