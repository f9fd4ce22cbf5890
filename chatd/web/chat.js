// chatd's web chat: one WebSocket to /v1/ws (docs/protocol.md), answers
// streamed as they arrive, a stop button, what the answer is doing, and the
// conversation kept in this browser across reloads. No build step.

const $ = (selector) => document.querySelector(selector);
const log = $("#log");
const form = $("#ask");
const input = $("#message");
const sendButton = $("#send");
const stopButton = $("#stop");
const statusLine = $("#status");

const SESSION = "chatd.session";
const KEY = "chatd.key";
const transcriptKey = () => `chatd.transcript.${session}`;

// What users read about tools and paths: what is happening, not internals.
const DOING = {
  frequently_asked: "Searching the help center…",
  calculator: "Calculating…",
  clock: "Checking the time…",
};
const PATHS = {
  direct: "Answered directly",
  tool_stream: "Answered from the help center",
  tools: "Answered with the help of tools",
};
const ERRORS = {
  overloaded: "The server is busy right now.",
  shutting_down: "The server is restarting.",
  rate_limited: "You are sending messages faster than allowed.",
  unauthorized: "This server needs an API key (below).",
  too_large: "That message is too long.",
  timeout: "The answer took too long.",
  upstream_unavailable: "The assistant is unavailable right now.",
  upstream_error: "The assistant ran into a problem.",
};

let session = localStorage.getItem(SESSION) || newSession();
let socket = null;
let open = false;
let retryMs = 500;
let retryTimer = null;
let current = null; // the request in flight: {id, item, text, note, turn}
let counter = 0;

function newSession() {
  // An unguessable name (22+ letters and digits): only this browser can continue it.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  const name = "w1" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  localStorage.setItem(SESSION, name);
  return name;
}

function setStatus(text, problem = false) {
  statusLine.textContent = text;
  statusLine.classList.toggle("problem", problem);
}

function seconds(ms) {
  return Math.max(1, Math.ceil(ms / 1000));
}

// --- the transcript -------------------------------------------------------------

function loadTranscript() {
  try {
    return JSON.parse(localStorage.getItem(transcriptKey()) || "[]");
  } catch {
    return [];
  }
}

function saveTranscript(turns) {
  localStorage.setItem(transcriptKey(), JSON.stringify(turns.slice(-200)));
}

function addItem(role, text, noteText = "", failed = false) {
  const item = document.createElement("li");
  item.className = role + (failed ? " failed" : "");
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  const note = document.createElement("span");
  note.className = "note";
  note.textContent = noteText;
  item.setAttribute("aria-label", role === "user" ? "You" : "Assistant");
  item.append(body, note);
  log.append(item);
  item.scrollIntoView({ block: "end" });
  return { item, body, note };
}

function render() {
  log.replaceChildren();
  for (const turn of loadTranscript()) {
    addItem(turn.role, turn.text, turn.note || "", Boolean(turn.failed));
  }
}

function remember(turn) {
  const turns = loadTranscript();
  turns.push(turn);
  saveTranscript(turns);
}

// --- the connection -------------------------------------------------------------

function connect() {
  clearTimeout(retryTimer);
  const url = new URL("/v1/ws", location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const key = localStorage.getItem(KEY);
  if (key) url.searchParams.set("api_key", key);
  setStatus("Connecting…");
  const ws = new WebSocket(url);
  socket = ws;
  ws.onopen = () => {
    open = true;
    retryMs = 500;
    setStatus("Connected");
    updateButtons();
  };
  ws.onmessage = (message) => onEvent(JSON.parse(message.data));
  ws.onclose = (event) => {
    if (socket !== ws) return;
    open = false;
    socket = null;
    interrupted("The connection was lost before the answer finished.");
    updateButtons();
    if (event.code === 1000) {
      setStatus("Idle: reconnects when you send a message");
      return;
    }
    if (event.code === 1008) {
      setStatus("This server needs an API key (below).", true);
      return;
    }
    const why =
      event.code === 1001
        ? "The server is restarting."
        : event.code === 1013
          ? "The server is busy."
          : "Cannot reach the server.";
    setStatus(`${why} Reconnecting in ${seconds(retryMs)} s…`, true);
    retryTimer = setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, 10000);
  };
}

function send(frame) {
  socket.send(JSON.stringify(frame));
}

// --- asking and answering -------------------------------------------------------

function ask(text) {
  if (!open) {
    if (!socket) connect();
    setStatus("Connecting… your message will be sent when connected.");
    socket.addEventListener("open", () => ask(text), { once: true });
    return;
  }
  addItem("user", text);
  remember({ role: "user", text });
  const id = `q${Date.now().toString(36)}${counter++}`;
  const view = addItem("assistant", "", "Thinking…");
  log.setAttribute("aria-busy", "true");
  current = { id, ...view, text: "" };
  send({ type: "chat", id, message: text, session });
  updateButtons();
}

function onEvent(event) {
  if (event.type === "pong" || !current || event.id !== current.id) {
    if (event.type === "error" && !event.id) setStatus(ERRORS[event.code] || event.message, true);
    return;
  }
  switch (event.type) {
    case "queued":
      current.note.textContent = `Waiting for a free moment (position ${event.position})…`;
      break;
    case "tool_start":
      current.note.textContent = DOING[event.tool] || "Looking something up…";
      break;
    case "route":
      if (event.path === "tools") current.note.textContent = "Writing the answer…";
      break;
    case "token":
      if (!current.text) current.note.textContent = "";
      current.text += event.text;
      current.body.textContent = current.text;
      current.item.scrollIntoView({ block: "end" });
      break;
    case "done":
      finish(
        event.finish_reason === "cancelled"
          ? "Stopped."
          : (PATHS[event.path] || "Answered") +
              (event.finish_reason === "length" ? " (cut short: too long)" : "") +
              (event.cached ? " · from a recent answer" : ""),
      );
      break;
    case "error": {
      const retry = event.retry_after_ms ? ` Try again in ${seconds(event.retry_after_ms)} s.` : "";
      finish((ERRORS[event.code] || "Something went wrong.") + retry, true);
      break;
    }
  }
}

function finish(noteText, failed = false) {
  const { item, note, text } = current;
  note.textContent = noteText;
  item.classList.toggle("failed", failed);
  remember({ role: "assistant", text, note: noteText, failed });
  current = null;
  log.setAttribute("aria-busy", "false");
  updateButtons();
  input.focus();
}

function interrupted(noteText) {
  if (current) finish(noteText, true);
}

function stop() {
  if (current && open) send({ type: "cancel", id: current.id });
}

function updateButtons() {
  sendButton.disabled = current !== null;
  stopButton.disabled = current === null;
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = input.value.trim();
  if (!text || current) return;
  input.value = "";
  ask(text);
});
input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  }
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") stop();
});
stopButton.addEventListener("click", stop);
$("#new").addEventListener("click", () => {
  stop();
  localStorage.removeItem(transcriptKey());
  session = newSession();
  render();
  input.focus();
});
$("#key").value = localStorage.getItem(KEY) || "";
$("#save-key").addEventListener("click", () => {
  localStorage.setItem(KEY, $("#key").value.trim());
  if (socket) socket.close(1000);
  socket = null;
  open = false;
  connect();
});

render();
connect();
input.focus();
