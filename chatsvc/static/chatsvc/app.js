// The chatsvc web chat. It talks to the service only through the public API (docs/api.md):
// the session cookie authenticates, and every unsafe request carries the CSRF token.
// An answer lives on the server, not in the request that asked for it: the page follows it (the POST,
// then `GET /api/ai/chat/stream/<id>` after a reload or a dropped connection), stops it with the stop
// endpoint and retries a failed one with `regenerate`. API.md's "Live answers" is the contract.
// Answers are Markdown, parsed by the vendored `marked` and sanitized by the vendored `DOMPurify`;
// user messages are plain text. Nothing from a message reaches the page as unsanitized HTML.

const API = {
  conversations: "/api/conversations/",
  conversation: (id) => `/api/conversations/${id}/`,
  messages: (id) => `/api/conversations/${id}/messages/?page_size=200`,
  quota: "/api/quota/",
  stream: "/api/ai/chat/stream",
  answer: (id) => `/api/ai/chat/stream/${id}`,
  stop: (id) => `/api/ai/chat/stream/${id}/stop`,
};
const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);
// The waits before each new attempt to reach an answer whose connection failed; then the page gives up.
const RECONNECT_DELAYS = [500, 1000, 2000, 4000, 8000];
// No byte for this long (the server sends a keep-alive every 15 s): the connection is dead, open another.
const STALL_MS = 45_000;
// The error codes another attempt may cure (API.md, "Error codes").
const RETRYABLE = new Set(["adapter_error", "adapter_timeout", "rate_limited", "adapter_unavailable", "interrupted"]);

const $ = (id) => document.getElementById(id);
const ui = {
  app: $("app"),
  sidebar: $("sidebar"),
  backdrop: $("sidebar-backdrop"),
  menuToggle: $("menu-toggle"),
  list: $("conversation-list"),
  listEmpty: $("conversation-empty"),
  newConversation: $("new-conversation"),
  quota: $("quota"),
  title: $("chat-title"),
  actions: $("chat-actions"),
  rename: $("rename-conversation"),
  renameForm: $("rename-form"),
  renameInput: $("rename-input"),
  renameCancel: $("rename-cancel"),
  remove: $("delete-conversation"),
  confirmDelete: $("confirm-delete"),
  deleteConfirm: $("delete-confirm"),
  deleteCancel: $("delete-cancel"),
  notice: $("page-notice"),
  messages: $("messages"),
  emptyChat: $("empty-chat"),
  compose: $("compose"),
  input: $("compose-input"),
  send: $("send"),
  stop: $("stop"),
};

const state = {
  conversations: [],
  currentId: null,
  // The conversation whose messages are being fetched: nothing is sent until they are shown.
  loading: null,
  // The answer the page follows (see newStream), always in the conversation shown; null when none.
  stream: null,
};

// --- HTTP -----------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(response, body) {
    super(body?.detail || `The service answered ${response.status}.`);
    this.status = response.status;
    this.code = body?.code;
    this.retryAfter = Number(response.headers.get("Retry-After")) || null;
  }
}

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

function headersFor(method, { json = false, accept = "application/json" } = {}) {
  const headers = { Accept: accept };
  if (json) headers["Content-Type"] = "application/json";
  if (!SAFE_METHODS.has(method)) headers["X-CSRFToken"] = csrfToken();
  return headers;
}

async function errorFrom(response) {
  const body = await response.json().catch(() => null);
  if (response.status === 401) {
    // The session has ended: log in again, then come back here.
    window.location.assign(`/accounts/login/?next=${encodeURIComponent("/")}`);
  }
  return new ApiError(response, body);
}

async function request(url, { method = "GET", body } = {}) {
  const response = await fetch(url, {
    method,
    headers: headersFor(method, { json: body !== undefined }),
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  if (!response.ok) throw await errorFrom(response);
  return response.status === 204 ? null : response.json();
}

/** Every item of a paginated list, following its `next` links. */
async function requestAll(url) {
  const items = [];
  for (let next = url; next; ) {
    const page = await request(next);
    items.push(...page.results);
    next = page.next;
  }
  return items;
}

/**
 * The events of a Server-Sent Events body, as the contract frames them: `id:` and `data:` lines,
 * a blank line ending each event, `:` comment lines (keep-alives) ignored. Yields `{id, data}` (`data`
 * parsed, `id` the last one seen, as EventSource keeps it); `onBytes` is called whenever bytes arrive.
 */
async function* readEvents(body, onBytes) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let data = [];
  let id = null;
  for (;;) {
    const { value, done } = await reader.read();
    onBytes();
    buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
    let newline;
    while ((newline = buffer.indexOf("\n")) !== -1) {
      const line = buffer.slice(0, newline).replace(/\r$/, "");
      buffer = buffer.slice(newline + 1);
      if (line === "") {
        if (data.length) yield { id, data: JSON.parse(data.join("\n")) };
        data = [];
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const field = colon === -1 ? line : line.slice(0, colon);
        const fieldValue = colon === -1 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") data.push(fieldValue);
        else if (field === "id" && /^\d+$/.test(fieldValue)) id = Number(fieldValue);
      }
    }
    if (done) return;
  }
}

// --- Markdown, sanitized --------------------------------------------------------------------

function escapeHtml(text) {
  const span = document.createElement("span");
  span.textContent = text;
  return span.innerHTML.replaceAll('"', "&quot;");
}

const markdown = new window.marked.Marked({
  gfm: true,
  breaks: true,
  renderer: {
    // Raw HTML in an answer is shown as text, never interpreted.
    html: ({ text }) => escapeHtml(text),
    // Images become links: an answer must not make the browser fetch anything by itself.
    image: ({ href, text }) => `<a href="${escapeHtml(href)}">${escapeHtml(text || href)}</a>`,
  },
});

window.DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

function renderMarkdown(element, text) {
  const fragment = window.DOMPurify.sanitize(markdown.parse(text), {
    USE_PROFILES: { html: true },
    FORBID_TAGS: ["img", "style", "form", "input", "button", "textarea", "select"],
    RETURN_DOM_FRAGMENT: true,
  });
  element.replaceChildren(fragment);
}

// --- Formatting -----------------------------------------------------------------------------

function formatReset(date) {
  const time = date.toLocaleTimeString("en-GB", { timeZone: "UTC", hour: "2-digit", minute: "2-digit" });
  if (date - Date.now() < 24 * 3600 * 1000) return `at ${time} UTC`;
  const day = date.toLocaleDateString("en-GB", { timeZone: "UTC", day: "numeric", month: "short" });
  return `on ${day} at ${time} UTC`;
}

function formatWait(seconds) {
  const hours = Math.floor(seconds / 3600);
  const minutes = Math.ceil((seconds % 3600) / 60);
  if (hours) return `${hours} h ${minutes} min`;
  return minutes > 1 ? `${minutes} min` : "a minute";
}

function plural(count, word) {
  return `${count.toLocaleString("en")} ${word}${count === 1 ? "" : "s"}`;
}

// --- Quota ----------------------------------------------------------------------------------

function showQuota({ requestsRemaining, tokensRemaining, resetsAt }) {
  const parts = [requestsRemaining === null ? "Unlimited requests" : `${plural(requestsRemaining, "request")} left`];
  if (tokensRemaining !== null) parts.push(`${plural(tokensRemaining, "token")} left`);
  if (resetsAt) parts.push(`resets ${formatReset(new Date(resetsAt))}`);
  ui.quota.textContent = parts.join(" · ");
  ui.quota.classList.toggle("quota-empty", requestsRemaining === 0 || tokensRemaining === 0);
}

async function loadQuota() {
  try {
    const quota = await request(API.quota);
    showQuota({
      requestsRemaining: quota.requests.remaining,
      tokensRemaining: quota.tokens.remaining,
      resetsAt: quota.resets_at,
    });
  } catch (error) {
    ui.quota.textContent = "Quota unavailable.";
  }
}

// --- Page notices ---------------------------------------------------------------------------

/** A notice above the messages: an error (an alert), or `polite` news that is no fault. */
function showNotice(text, { polite = false } = {}) {
  ui.notice.textContent = text;
  ui.notice.classList.toggle("notice-error", !polite);
  ui.notice.setAttribute("role", polite ? "status" : "alert");
  ui.notice.hidden = false;
}

function clearNotice() {
  ui.notice.hidden = true;
  ui.notice.textContent = "";
}

// --- Conversations --------------------------------------------------------------------------

function currentConversation() {
  return state.conversations.find((conversation) => conversation.id === state.currentId) || null;
}

function titleOf(conversation) {
  return conversation?.title || "Untitled";
}

function renderConversationList() {
  ui.list.replaceChildren(
    ...state.conversations.map((conversation) => {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "conversation";
      button.textContent = titleOf(conversation);
      button.dataset.id = conversation.id;
      if (conversation.id === state.currentId) button.setAttribute("aria-current", "page");
      button.addEventListener("click", () => {
        closeSidebar();
        selectConversation(conversation.id);
      });
      item.append(button);
      return item;
    }),
  );
  ui.listEmpty.hidden = state.conversations.length > 0;
}

function renderHeader() {
  const conversation = currentConversation();
  ui.title.textContent = conversation ? titleOf(conversation) : "New chat";
  ui.actions.hidden = !conversation;
  ui.renameForm.hidden = true;
  ui.confirmDelete.hidden = true;
  ui.title.hidden = false;
  document.title = `${conversation ? titleOf(conversation) : "New chat"} · chatsvc`;
}

async function loadConversations() {
  state.conversations = await requestAll(`${API.conversations}?page_size=200`);
  renderConversationList();
  renderHeader();
}

async function selectConversation(id) {
  detach();
  clearNotice();
  state.currentId = id;
  history.replaceState(null, "", id ? `#${id}` : window.location.pathname);
  renderConversationList();
  renderHeader();
  if (!id) {
    showMessages([]);
    ui.input.focus();
    return;
  }
  state.loading = id;
  try {
    const messages = await requestAll(API.messages(id));
    if (state.currentId !== id) return;
    const views = showMessages(messages, id);
    const last = messages.at(-1);
    if (last?.role === "assistant" && last.status === "streaming") followStored(id, last, views.at(-1));
  } catch (error) {
    if (state.currentId === id) showNotice(`Could not load this conversation: ${error.message}`);
  } finally {
    if (state.loading === id) state.loading = null;
  }
}

function startRename() {
  ui.renameInput.value = currentConversation()?.title || "";
  ui.title.hidden = true;
  ui.actions.hidden = true;
  ui.renameForm.hidden = false;
  ui.renameInput.focus();
  ui.renameInput.select();
}

async function saveRename(event) {
  event.preventDefault();
  const id = state.currentId;
  try {
    await request(API.conversation(id), { method: "PATCH", body: { title: ui.renameInput.value.trim() } });
    await loadConversations();
    $("rename-conversation").focus();
  } catch (error) {
    showNotice(`Could not rename: ${error.message}`);
  }
}

function askDelete() {
  ui.actions.hidden = true;
  ui.confirmDelete.hidden = false;
  ui.deleteCancel.focus();
}

async function confirmDelete() {
  try {
    await request(API.conversation(state.currentId), { method: "DELETE" });
    await loadConversations();
    await selectConversation(state.conversations[0]?.id || null);
  } catch (error) {
    renderHeader();
    showNotice(`Could not delete: ${error.message}`);
  }
}

// --- Messages -------------------------------------------------------------------------------

const STATUS_NOTES = {
  interrupted: "Interrupted — this answer is incomplete.",
  stopped: "Stopped — this answer is incomplete.",
  streaming: "Still being written…",
  disconnected: "The connection to the service was lost.",
};

/** One message's element: {root, body, note}. Assistant text is sanitized Markdown. */
function messageView(role, content = "") {
  const root = document.createElement("article");
  root.className = `message message-${role}`;
  const label = document.createElement("h2");
  label.className = "message-role";
  label.textContent = role === "user" ? "You" : "Assistant";
  const body = document.createElement("div");
  body.className = role === "user" ? "message-body" : "message-body markdown";
  const note = document.createElement("div");
  note.className = "message-note";
  note.hidden = true;
  root.append(label, body, note);
  const view = { root, body, note };
  setContent(view, role, content);
  return view;
}

function setContent(view, role, content) {
  if (role === "user") view.body.textContent = content;
  else renderMarkdown(view.body, content);
}

function setStatus(view, status, { text = STATUS_NOTES[status], retry = null, alert = false } = {}) {
  view.root.dataset.status = status;
  view.note.replaceChildren();
  view.note.hidden = !text;
  view.note.className = `message-note note-${status}`;
  if (!text) return;
  view.note.setAttribute("role", alert ? "alert" : "status");
  const message = document.createElement("span");
  message.textContent = text;
  view.note.append(message);
  if (retry) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "button button-quiet retry";
    button.textContent = "Retry";
    button.addEventListener("click", () => {
      button.disabled = true;
      retry();
    });
    view.note.append(button);
  }
}

/** The note of a stored message; `retry` is offered when it is a failed or interrupted answer. */
function storedNote(message, retry = null) {
  const failed = message.status === "failed";
  const retryable = message.status === "interrupted" || (failed && RETRYABLE.has(message.error?.code));
  const note = { retry: retryable ? retry : null };
  if (failed) note.text = message.error ? `Failed — ${message.error.message}` : "Failed.";
  return note;
}

/** Show a conversation's stored messages; returns their views. Its last answer may be retried. */
function showMessages(messages, conversationId) {
  const views = messages.map((message, index) => {
    const view = messageView(message.role, message.content);
    view.root.dataset.messageId = message.id;
    const last = index === messages.length - 1 && message.role === "assistant";
    setStatus(view, message.status, storedNote(message, last ? () => regenerate(conversationId, view) : null));
    return view;
  });
  ui.messages.replaceChildren(...views.map((view) => view.root));
  ui.emptyChat.hidden = messages.length > 0;
  if (!messages.length) ui.messages.append(ui.emptyChat);
  scrollToEnd(true);
  return views;
}

function appendView(view) {
  ui.emptyChat.remove();
  ui.messages.append(view.root);
  scrollToEnd(true);
}

function scrollToEnd(force = false) {
  const distance = ui.messages.scrollHeight - ui.messages.scrollTop - ui.messages.clientHeight;
  if (force || distance < 120) ui.messages.scrollTop = ui.messages.scrollHeight;
}

// --- Sending and following answers ----------------------------------------------------------

function setStreaming(streaming) {
  ui.input.disabled = streaming;
  ui.send.disabled = streaming;
  ui.send.hidden = streaming;
  ui.stop.hidden = !streaming;
  ui.stop.disabled = false;
  ui.remove.disabled = streaming;
  if (streaming) ui.stop.focus();
  else ui.input.focus();
}

/** A random (v4) UUID, also where `crypto.randomUUID` is missing (it needs a secure context). */
function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * An answer the page follows: its view, its text so far and the last event id read (a dropped
 * connection reads on from there). `open` sends the request that starts it — again, with the same
 * Idempotency-Key, when its connection failed before the answer's first event. `refused` shows a
 * start the service refused (nothing was stored).
 */
function newStream({ conversationId, view, messageId = null, shown = 0 }) {
  const stream = {
    conversationId,
    view,
    messageId,
    open: null,
    refused: (error) => finishAnswer(stream, "failed", { text: error.message, alert: true }),
    text: "",
    shown, // the length of the text shown from the database: a replay is drawn once it is as long
    lastEventId: 0,
    connection: null,
    ended: false,
    detached: false,
    stopping: false,
    rendering: false,
    quotaSeen: false,
  };
  // Settled by the `start` event (the answer's id, which a stop needs) or by the end of following.
  stream.started = new Promise((resolve) => (stream.markStarted = resolve));
  if (messageId) stream.markStarted();
  return stream;
}

function connect(stream, url, init) {
  stream.connection = new AbortController();
  return fetch(url, { ...init, credentials: "same-origin", signal: stream.connection.signal });
}

/** The POST that starts an answer: one key for this user action, reused by every attempt. */
function answerRequest(stream, body) {
  const headers = headersFor("POST", { json: true, accept: "text/event-stream" });
  headers["Idempotency-Key"] = newKey();
  return () => connect(stream, API.stream, { method: "POST", headers, body: JSON.stringify(body) });
}

/** Read the answer again, after the last event seen (all of it, from a reload). */
function readAgain(stream) {
  const headers = headersFor("GET", { accept: "text/event-stream" });
  if (stream.lastEventId) headers["Last-Event-ID"] = String(stream.lastEventId);
  return connect(stream, API.answer(stream.messageId), { headers });
}

/** Wait `ms`, or less when the browser comes back online. */
function pause(ms) {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      window.removeEventListener("online", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    window.addEventListener("online", done);
  });
}

/**
 * Follow an answer to its end. A connection that ends before the answer does (the answer goes on on
 * the server) is opened again: the answer is read on from its last event, or, before its first one,
 * the same POST is sent again. After RECONNECT_DELAYS the page gives up and offers a Retry.
 */
async function follow(stream) {
  state.stream = stream;
  setStreaming(true);
  let refusal = null;
  let failures = 0;
  while (!stream.ended && !stream.detached) {
    const reading = Boolean(stream.messageId);
    const lastSeen = stream.lastEventId;
    try {
      const response = await (reading ? readAgain(stream) : stream.open());
      if (reading && (response.status === 204 || response.status === 404)) await showStoredEnd(stream);
      else if (response.ok) await readAnswer(stream, response.body);
      else if (!reading || response.status < 500) refusal = await errorFrom(response);
      // A 5xx while reading again is the service's passing trouble: try again below.
    } catch (error) {
      // The network failed, a stalled connection was closed, or the page left the answer.
      if (!(error instanceof TypeError || error instanceof ApiError) && error.name !== "AbortError") throw error;
    }
    if (refusal || stream.ended || stream.detached) break;
    failures = stream.lastEventId > lastSeen ? 1 : failures + 1;
    if (failures > RECONNECT_DELAYS.length) {
      finishAnswer(stream, "disconnected", { retry: () => resume(stream), alert: true });
      break;
    }
    await pause(RECONNECT_DELAYS[failures - 1]);
  }
  stream.markStarted();
  release(stream);
  if (refusal) await stream.refused(refusal);
  if (stream.detached) return;
  await loadConversations().catch(() => {});
  if (!stream.quotaSeen) await loadQuota();
}

/** Read one connection's events into the answer; a connection silent for STALL_MS is closed. */
async function readAnswer(stream, body) {
  const { connection } = stream;
  let timer = null;
  const watch = () => {
    clearTimeout(timer);
    timer = setTimeout(() => connection.abort(), STALL_MS);
  };
  watch();
  try {
    for await (const { id, data } of readEvents(body, watch)) {
      if (id !== null && id <= stream.lastEventId) continue; // seen on an earlier connection
      if (id !== null) stream.lastEventId = id;
      handleEvent(stream, data);
    }
  } finally {
    clearTimeout(timer);
  }
}

/** Stop following (another conversation is shown); the answer goes on on the server. */
function detach() {
  const stream = state.stream;
  if (!stream) return;
  stream.detached = true;
  stream.connection?.abort();
  release(stream);
}

function release(stream) {
  if (state.stream !== stream) return;
  state.stream = null;
  setStreaming(false);
}

/** Handle one event of the answer. */
function handleEvent(stream, event) {
  switch (event.type) {
    case "start":
      stream.messageId = event.message_id;
      stream.view.root.dataset.messageId = event.message_id;
      stream.markStarted();
      if (!stream.conversationId) {
        stream.conversationId = event.conversation_id;
        if (!state.currentId) {
          state.currentId = event.conversation_id;
          history.replaceState(null, "", `#${event.conversation_id}`);
        }
        loadConversations().catch(() => {}); // the new conversation, in the list at once
      }
      break;
    case "chunk":
      stream.text += event.content;
      scheduleRender(stream);
      break;
    case "done": {
      const stopped = event.finish_reason === "stopped";
      finishAnswer(stream, stopped ? "stopped" : "complete", stopped ? {} : { text: "" });
      stream.quotaSeen = true;
      showQuota({
        requestsRemaining: event.quota.requests_remaining,
        tokensRemaining: event.quota.tokens_remaining,
        resetsAt: event.quota.resets_at,
      });
      break;
    }
    case "error":
      finishAnswer(stream, event.code === "interrupted" ? "interrupted" : "failed", {
        text: event.message,
        retry: event.retryable ? () => regenerate(stream.conversationId, stream.view) : null,
        alert: true,
      });
      break;
    default:
      break;
  }
}

/** Re-render the growing answer at most once a frame. */
function scheduleRender(stream) {
  if (stream.rendering) return;
  stream.rendering = true;
  requestAnimationFrame(() => {
    stream.rendering = false;
    if (stream.ended || stream.text.length < stream.shown) return;
    renderMarkdown(stream.view.body, stream.text);
    scrollToEnd();
  });
}

function finishAnswer(stream, status, note) {
  if (stream.ended) return;
  stream.ended = true;
  renderMarkdown(stream.view.body, stream.text);
  stream.view.body.setAttribute("aria-busy", "false");
  setStatus(stream.view, status, note);
  scrollToEnd();
}

function showAsStreaming(view) {
  view.body.setAttribute("aria-live", "polite");
  view.body.setAttribute("aria-busy", "true");
  setStatus(view, "streaming", { text: "" });
}

/** The answer's events are no longer kept: show its end as the messages API stores it. */
async function showStoredEnd(stream) {
  const messages = await requestAll(API.messages(stream.conversationId));
  const message = messages.find((item) => item.id === stream.messageId);
  if (!message) {
    selectConversation(stream.conversationId); // replaced or deleted meanwhile: show what is there
    return;
  }
  stream.text = message.content;
  if (message.status === "streaming") {
    const text = "This answer cannot be followed any more; reload later to see how it ended.";
    finishAnswer(stream, "streaming", { text });
  } else {
    const last = message === messages.at(-1);
    finishAnswer(stream, message.status, storedNote(message, last ? retryOf(stream) : null));
  }
}

function retryOf(stream) {
  return () => regenerate(stream.conversationId, stream.view);
}

/** Send a message; its answer is appended and followed. */
async function send(text) {
  if (state.stream) return;
  clearNotice();
  dropRetries();
  const question = messageView("user", text);
  const answer = messageView("assistant");
  showAsStreaming(answer);
  appendView(question);
  appendView(answer);
  const stream = newStream({ conversationId: state.currentId, view: answer });
  const body = { message: text };
  if (stream.conversationId) body.conversation_id = stream.conversationId;
  stream.open = answerRequest(stream, body);
  stream.refused = async (error) => {
    if (error.code !== "stream_in_progress") return showRefusal(stream, question, error, () => send(text));
    // Another tab's answer is being written: follow it, and keep the message for later.
    question.root.remove();
    answer.root.remove();
    if (!ui.input.value) ui.input.value = text;
    autosize();
    await selectConversation(stream.conversationId);
    showNotice(`${refusalText(error)} Your message is back in the box: send it when the answer is done.`, {
      polite: true,
    });
  };
  await follow(stream);
}

/** Retry the conversation's last answer in place: `regenerate` answers its last user message again. */
async function regenerate(conversationId, view) {
  if (state.stream || state.currentId !== conversationId) return;
  clearNotice();
  showAsStreaming(view);
  renderMarkdown(view.body, "");
  const stream = newStream({ conversationId, view });
  stream.open = answerRequest(stream, { conversation_id: conversationId, regenerate: true });
  stream.refused = async (error) => {
    await selectConversation(conversationId); // nothing changed: the answer as it was
    showNotice(refusalText(error), { polite: error.code === "stream_in_progress" });
  };
  await follow(stream);
}

/** Follow an answer still being written (after a reload, from another tab) from its first event. */
function followStored(conversationId, message, view) {
  showAsStreaming(view);
  follow(newStream({ conversationId, view, messageId: message.id, shown: message.content.length }));
}

/** Follow an answer again after the page gave up reaching it (the Retry of a lost connection). */
function resume(stream) {
  if (state.stream || state.currentId !== stream.conversationId) return;
  stream.ended = false;
  showAsStreaming(stream.view);
  follow(stream);
}

/** Stop the answer with the stop endpoint: it ends `stopped`, for every reader of it. */
async function stopAnswer() {
  const stream = state.stream;
  if (!stream || stream.stopping) return;
  stream.stopping = true;
  ui.stop.disabled = true;
  await stream.started;
  if (!stream.messageId || stream.ended || stream.detached) return;
  try {
    const message = await request(API.stop(stream.messageId), { method: "POST" });
    // Its readers get the end (`done`, "stopped"); should this page's connection not deliver it, the
    // end the stop committed is shown. A 202 (still `streaming`) leaves it to the reader.
    if (message.status === "streaming") return;
    setTimeout(() => {
      if (stream.ended || stream.detached) return;
      stream.text = message.content;
      finishAnswer(stream, message.status, storedNote(message));
      stream.connection?.abort();
    }, 3000);
  } catch (error) {
    showNotice(`Could not stop the answer: ${error.message}`);
    if (state.stream === stream) {
      stream.stopping = false;
      ui.stop.disabled = false;
    }
  }
}

/** A new message makes the older answers' Retry wrong: `regenerate` answers the last user message. */
function dropRetries() {
  for (const button of ui.messages.querySelectorAll(".retry")) button.remove();
}

function refusalText(error) {
  if (error.code === "quota_exceeded") {
    const resetsAt = new Date(Date.now() + error.retryAfter * 1000);
    const when = error.retryAfter
      ? `It resets ${formatReset(resetsAt)} (in ${formatWait(error.retryAfter)}).`
      : "It does not reset by itself.";
    return `Your quota is used up. ${when}`;
  }
  if (error.code === "stream_in_progress") return "This conversation is still writing an answer.";
  return error.message;
}

/** A message refused before its answer started (quota, validation…): nothing was stored. */
function showRefusal(stream, question, error, retry) {
  setStatus(question, "unsent", { text: "Not sent." });
  stream.view.root.classList.add("message-refusal");
  stream.view.root.querySelector(".message-role").textContent = "chatsvc";
  const quota = error.code === "quota_exceeded";
  finishAnswer(stream, quota ? "quota" : "failed", {
    text: refusalText(error),
    retry: !quota && error.status >= 500 ? retry : null,
    alert: true,
  });
}

// --- Sidebar on narrow screens --------------------------------------------------------------

function openSidebar() {
  ui.app.classList.add("sidebar-open");
  ui.backdrop.hidden = false;
  ui.menuToggle.setAttribute("aria-expanded", "true");
  (ui.list.querySelector("[aria-current]") || ui.newConversation).focus();
}

function closeSidebar() {
  if (!ui.app.classList.contains("sidebar-open")) return;
  ui.app.classList.remove("sidebar-open");
  ui.backdrop.hidden = true;
  ui.menuToggle.setAttribute("aria-expanded", "false");
}

// --- Wiring ---------------------------------------------------------------------------------

function autosize() {
  ui.input.style.height = "auto";
  ui.input.style.height = `${Math.min(ui.input.scrollHeight, 200)}px`;
}

function submitCompose(event) {
  event.preventDefault();
  const text = ui.input.value.trim();
  if (!text || state.stream || state.loading) return;
  ui.input.value = "";
  autosize();
  send(text);
}

ui.compose.addEventListener("submit", submitCompose);
ui.input.addEventListener("input", autosize);
ui.input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) submitCompose(event);
});
ui.stop.addEventListener("click", stopAnswer);
ui.newConversation.addEventListener("click", () => {
  closeSidebar();
  selectConversation(null);
});
ui.rename.addEventListener("click", startRename);
ui.renameForm.addEventListener("submit", saveRename);
ui.renameCancel.addEventListener("click", renderHeader);
ui.remove.addEventListener("click", askDelete);
ui.deleteConfirm.addEventListener("click", confirmDelete);
ui.deleteCancel.addEventListener("click", () => {
  renderHeader();
  ui.remove.focus();
});
ui.menuToggle.addEventListener("click", () =>
  ui.app.classList.contains("sidebar-open") ? closeSidebar() : openSidebar(),
);
ui.backdrop.addEventListener("click", closeSidebar);
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape") return;
  if (!ui.renameForm.hidden || !ui.confirmDelete.hidden) renderHeader();
  if (ui.app.classList.contains("sidebar-open")) {
    closeSidebar();
    ui.menuToggle.focus();
  }
});

async function start() {
  loadQuota();
  try {
    await loadConversations();
  } catch (error) {
    showNotice(`Could not load your conversations: ${error.message}`);
    return;
  }
  const wanted = window.location.hash.slice(1);
  const known = state.conversations.some((conversation) => conversation.id === wanted);
  await selectConversation(known ? wanted : state.conversations[0]?.id || null);
}

start();
