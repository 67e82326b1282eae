// The chatsvc web chat. It talks to the service only through the public API (docs/api.md):
// the session cookie authenticates, and every unsafe request carries the CSRF token.
// Answers are Markdown, parsed by the vendored `marked` and sanitized by the vendored `DOMPurify`;
// user messages are plain text. Nothing from a message reaches the page as unsanitized HTML.

const API = {
  conversations: "/api/conversations/",
  conversation: (id) => `/api/conversations/${id}/`,
  messages: (id) => `/api/conversations/${id}/messages/?page_size=200`,
  quota: "/api/quota/",
  stream: "/api/ai/chat/stream",
};
const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

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
  // The answer being streamed: {controller, conversationId, messageId, view, text, ended}.
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
 * a blank line ending each event, `:` comment lines (keep-alives) ignored. Yields parsed `data`.
 */
async function* readEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
    let newline;
    while ((newline = buffer.indexOf("\n")) !== -1) {
      const line = buffer.slice(0, newline).replace(/\r$/, "");
      buffer = buffer.slice(newline + 1);
      if (line === "") {
        if (data.length) yield JSON.parse(data.join("\n"));
        data = [];
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const field = colon === -1 ? line : line.slice(0, colon);
        const fieldValue = colon === -1 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") data.push(fieldValue);
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

function showNotice(text) {
  ui.notice.textContent = text;
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
  try {
    const messages = await requestAll(API.messages(id));
    if (state.currentId === id) showMessages(messages);
  } catch (error) {
    showNotice(`Could not load this conversation: ${error.message}`);
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
  streaming: "Still being written…",
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

function showMessages(messages) {
  const views = messages.map((message) => {
    if (state.stream && message.id === state.stream.messageId) return state.stream.view.root;
    const view = messageView(message.role, message.content);
    const error = message.error ? `Failed — ${message.error.message}` : "Failed.";
    setStatus(view, message.status, message.status === "failed" ? { text: error } : {});
    return view.root;
  });
  ui.messages.replaceChildren(...views);
  ui.emptyChat.hidden = messages.length > 0;
  if (!messages.length) ui.messages.append(ui.emptyChat);
  scrollToEnd(true);
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

// --- Sending and streaming ------------------------------------------------------------------

function setStreaming(streaming) {
  ui.input.disabled = streaming;
  ui.send.hidden = streaming;
  ui.stop.hidden = !streaming;
  ui.remove.disabled = streaming;
  if (streaming) ui.stop.focus();
  else ui.input.focus();
}

async function send(text) {
  if (state.stream) return;
  clearNotice();
  const question = messageView("user", text);
  const answer = messageView("assistant");
  answer.body.setAttribute("aria-live", "polite");
  answer.body.setAttribute("aria-busy", "true");
  setStatus(answer, "streaming", { text: "" });
  appendView(question);
  appendView(answer);

  const stream = {
    controller: new AbortController(),
    conversationId: state.currentId,
    messageId: null,
    view: answer,
    text: "",
    ended: false,
    rendering: false,
  };
  state.stream = stream;
  setStreaming(true);
  const retry = () => send(text);
  let quotaSeen = false;
  try {
    const body = { message: text };
    if (stream.conversationId) body.conversation_id = stream.conversationId;
    const response = await fetch(API.stream, {
      method: "POST",
      headers: headersFor("POST", { json: true, accept: "text/event-stream" }),
      body: JSON.stringify(body),
      credentials: "same-origin",
      signal: stream.controller.signal,
    });
    if (!response.ok) {
      showRefusal(stream, question, await errorFrom(response), retry);
      return;
    }
    for await (const event of readEvents(response.body)) {
      quotaSeen = handleEvent(stream, event, retry) || quotaSeen;
    }
    if (!stream.ended) {
      finishAnswer(stream, "interrupted", { text: "The connection ended before the answer did.", retry });
    }
  } catch (error) {
    if (error.name === "AbortError") {
      finishAnswer(stream, "interrupted", { text: "Interrupted — you stopped this answer." });
    } else {
      finishAnswer(stream, "interrupted", { text: "The service could not be reached.", retry, alert: true });
    }
  } finally {
    state.stream = null;
    setStreaming(false);
    await loadConversations().catch(() => {});
    if (!quotaSeen) await loadQuota();
  }
}

/** Handle one stream event; true when it carried the caller's quota. */
function handleEvent(stream, event, retry) {
  switch (event.type) {
    case "start":
      stream.messageId = event.message_id;
      stream.view.root.dataset.messageId = event.message_id;
      if (!stream.conversationId) {
        stream.conversationId = event.conversation_id;
        if (!state.currentId) {
          state.currentId = event.conversation_id;
          history.replaceState(null, "", `#${event.conversation_id}`);
        }
        loadConversations().catch(() => {}); // the new conversation, in the list at once
      }
      return false;
    case "chunk":
      stream.text += event.content;
      scheduleRender(stream);
      return false;
    case "done":
      finishAnswer(stream, "complete", { text: "" });
      showQuota({
        requestsRemaining: event.quota.requests_remaining,
        tokensRemaining: event.quota.tokens_remaining,
        resetsAt: event.quota.resets_at,
      });
      return true;
    case "error":
      finishAnswer(stream, "failed", {
        text: event.message,
        retry: event.retryable ? retry : null,
        alert: true,
      });
      return false;
    default:
      return false;
  }
}

/** Re-render the growing answer at most once a frame. */
function scheduleRender(stream) {
  if (stream.rendering) return;
  stream.rendering = true;
  requestAnimationFrame(() => {
    stream.rendering = false;
    if (stream.ended) return;
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

/** A stream refused before it started (quota, validation…): nothing was stored. */
function showRefusal(stream, question, error, retry) {
  setStatus(question, "unsent", { text: "Not sent." });
  stream.view.root.classList.add("message-refusal");
  stream.view.root.querySelector(".message-role").textContent = "chatsvc";
  if (error.code === "quota_exceeded") {
    const resetsAt = new Date(Date.now() + error.retryAfter * 1000);
    const when = error.retryAfter
      ? `It resets ${formatReset(resetsAt)} (in ${formatWait(error.retryAfter)}).`
      : "It does not reset by itself.";
    finishAnswer(stream, "quota", { text: `Your quota is used up. ${when}`, alert: true });
  } else {
    const canRetry = error.status >= 500;
    finishAnswer(stream, "failed", { text: error.message, retry: canRetry ? retry : null, alert: true });
  }
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
  if (!text || state.stream) return;
  ui.input.value = "";
  autosize();
  send(text);
}

ui.compose.addEventListener("submit", submitCompose);
ui.input.addEventListener("input", autosize);
ui.input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) submitCompose(event);
});
ui.stop.addEventListener("click", () => state.stream?.controller.abort());
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
