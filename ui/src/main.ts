// icee browser UI: wires the editor, the terminal and the session protocol.
//
// One run: POST /session -> open WS /ws/session/{id} -> stream stdout/stderr
// into the terminal, typed lines out as "input" messages -> a final
// "finished"/"terminated" state (or an error / a dropped connection).

import "@xterm/xterm/css/xterm.css";
import "./style.css";
import {
  ApiError,
  type ClientMessage,
  createSession,
  deleteSession,
  describeClose,
  getSession,
  type Language,
  listLanguages,
  type ServerMessage,
  webSocketUrl,
} from "./api";
import { CodeEditor } from "./editor";
import { STARTERS, starterFor } from "./starters";
import { TerminalPane } from "./terminal";

/** What the status bar shows: the session's state, or where the UI stands. */
type UiState =
  | "idle"
  | "starting"
  | "pending"
  | "running"
  | "waiting"
  | "finished"
  | "terminated"
  | "error"
  | "disconnected";

interface Run {
  id: string | null; // null until POST /session answers
  ws: WebSocket | null;
  ended: boolean; // a final state arrived, or the run failed
  pendingInput: ClientMessage[]; // typed before the stream opened
}

const $ = <T extends HTMLElement>(id: string): T => {
  const element = document.getElementById(id);
  if (!element) throw new Error(`#${id} is missing from index.html`);
  return element as T;
};

const ui = {
  language: $<HTMLSelectElement>("language"),
  run: $<HTMLButtonElement>("run"),
  stop: $<HTMLButtonElement>("stop"),
  eof: $<HTMLButtonElement>("eof"),
  clear: $<HTMLButtonElement>("clear"),
  reset: $<HTMLButtonElement>("reset"),
  state: $("state"),
  exitCode: $("exit-code"),
  reason: $("reason"),
  elapsed: $("elapsed"),
  message: $("message"),
  announce: $("announce"),
};

const STATE_LABELS: Record<UiState, string> = {
  idle: "idle",
  starting: "starting",
  pending: "pending",
  running: "running",
  waiting: "waiting",
  finished: "finished",
  terminated: "terminated",
  error: "error",
  disconnected: "disconnected",
};

const storage = {
  get(key: string): string | null {
    try {
      return localStorage.getItem(`icee.${key}`);
    } catch {
      return null;
    }
  },
  set(key: string, value: string): void {
    try {
      localStorage.setItem(`icee.${key}`, value);
    } catch {
      // storage disabled: drafts just are not kept
    }
  },
};

let language = storage.get("language") ?? "python";
let current: Run | null = null;
let timer: number | undefined;
let startedAt = 0;

const editor = new CodeEditor({
  parent: $("editor"),
  language,
  doc: storage.get(`draft.${language}`) ?? starterFor(language),
  onChange: (doc) => storage.set(`draft.${language}`, doc),
});

const terminal = new TerminalPane($("terminal"), {
  onLine: (data) => send({ type: "input", data }),
  onEof: () => send({ type: "eof" }),
  onInterrupt: () => stop(),
});
terminal.note("Run (Ctrl+Enter) starts your program; its output shows here.");
terminal.note("Type its input here: Enter sends a line, Ctrl+D ends the input.");

// ---- status bar and messages ---------------------------------------------

function setState(state: UiState, exitCode?: number | null, reason?: string | null): void {
  ui.state.textContent = STATE_LABELS[state];
  ui.state.dataset.state = state;
  delete ui.state.dataset.ok;
  if (exitCode !== undefined) ui.exitCode.textContent = exitCode === null ? "—" : String(exitCode);
  if (reason !== undefined) ui.reason.textContent = reason || "—";
  const active = current !== null && !current.ended;
  ui.run.disabled = active;
  ui.stop.disabled = !active;
  ui.eof.disabled = !active;
  terminal.inputEnabled = active;
  // Never leave the keyboard focus on a button that just got disabled.
  const focused = document.activeElement;
  if (focused instanceof HTMLButtonElement && focused.disabled) {
    if (active) terminal.focus();
    else ui.run.focus();
  }
  const parts = [`State: ${state}`];
  if (exitCode !== undefined && exitCode !== null) parts.push(`exit code ${exitCode}`);
  if (reason) parts.push(reason);
  ui.announce.textContent = parts.join(", ");
}

function showMessage(text: string, kind: "error" | "info" = "error"): void {
  const line = document.createElement("p");
  line.textContent = text;
  line.className = kind;
  ui.message.append(line);
  ui.message.hidden = false;
}

function clearMessages(): void {
  ui.message.replaceChildren();
  ui.message.hidden = true;
}

function formatElapsed(ms: number): string {
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  return `${minutes} min ${(seconds - minutes * 60).toFixed(1).padStart(4, "0")} s`;
}

function startClock(): void {
  startedAt = performance.now();
  ui.elapsed.textContent = formatElapsed(0);
  window.clearInterval(timer);
  timer = window.setInterval(() => {
    ui.elapsed.textContent = formatElapsed(performance.now() - startedAt);
  }, 100);
}

function stopClock(): string {
  window.clearInterval(timer);
  timer = undefined;
  const text = formatElapsed(performance.now() - startedAt);
  ui.elapsed.textContent = text;
  return text;
}

// ---- languages and drafts ------------------------------------------------

function fillLanguages(languages: Language[]): void {
  ui.language.replaceChildren(
    ...languages.map((lang) => {
      const label = [lang.displayName || lang.id, lang.version].filter(Boolean).join(" ");
      return new Option(label, lang.id);
    }),
  );
  const known = languages.some((lang) => lang.id === language);
  if (!known && languages.length > 0) switchLanguage(languages[0].id);
  ui.language.value = language;
}

function switchLanguage(id: string): void {
  language = id;
  storage.set("language", id);
  editor.load(id, storage.get(`draft.${id}`) ?? starterFor(id));
}

ui.language.addEventListener("change", () => switchLanguage(ui.language.value));

ui.reset.addEventListener("click", () => {
  editor.load(language, starterFor(language));
  storage.set(`draft.${language}`, editor.code);
  editor.focus();
});

async function loadLanguages(): Promise<void> {
  fillLanguages([{ id: language, displayName: language, version: "" }]);
  try {
    fillLanguages(await listLanguages());
    ui.language.dataset.loaded = "true";
  } catch (error) {
    ui.language.dataset.loaded = "failed";
    const why = error instanceof ApiError ? error.message : String(error);
    showMessage(`Could not load the list of languages: ${why}`);
    fillLanguages(Object.keys(STARTERS).map((id) => ({ id, displayName: id, version: "" })));
  }
}

// ---- a run ---------------------------------------------------------------

function send(message: ClientMessage): void {
  if (!current || current.ended) return;
  if (current.ws?.readyState === WebSocket.OPEN) current.ws.send(JSON.stringify(message));
  else current.pendingInput.push(message);
}

async function run(): Promise<void> {
  if (current && !current.ended) return;
  const run: Run = { id: null, ws: null, ended: false, pendingInput: [] };
  current = run;
  clearMessages();
  terminal.reset();
  startClock();
  setState("starting", null, null);
  terminal.focus();
  try {
    run.id = await createSession(language, editor.code);
  } catch (error) {
    fail(run, `Could not start the program: ${error instanceof ApiError ? error.message : String(error)}`);
    return;
  }
  if (current !== run) return;
  if (run.ended) {
    // Stopped while POST /session was in flight.
    void deleteSession(run.id).catch(() => undefined);
    return;
  }
  connect(run, run.id);
}

function connect(run: Run, id: string): void {
  let opened = false;
  const ws = new WebSocket(webSocketUrl(id));
  run.ws = ws;
  ws.onopen = () => {
    opened = true;
    for (const message of run.pendingInput.splice(0)) ws.send(JSON.stringify(message));
  };
  ws.onmessage = (event) => {
    let message: ServerMessage;
    try {
      message = JSON.parse(String(event.data)) as ServerMessage;
    } catch {
      return; // not JSON: not part of the protocol
    }
    handleMessage(run, message);
  };
  ws.onclose = (event) => {
    if (run.ended || current !== run) return;
    const what = opened ? "Lost the connection to the program" : "Could not connect to the program";
    fail(run, `${what}: ${describeClose(event.code, event.reason)}.`, "disconnected");
    void recoverFinalState(run, id);
  };
}

function handleMessage(run: Run, message: ServerMessage): void {
  if (current !== run) return;
  switch (message.type) {
    case "stdout":
      terminal.stdout(message.data);
      break;
    case "stderr":
      terminal.stderr(message.data);
      break;
    case "error":
      showMessage(`Error from the server: ${message.message}`);
      terminal.note(`icee: ${message.message}`, "error");
      break;
    case "state":
      if (message.state === "finished" || message.state === "terminated") {
        finish(run, message.state, message.exitCode ?? null, message.reason ?? null, message.message);
      } else if (!run.ended) {
        setState(message.state);
      }
      break;
  }
}

function finish(
  run: Run,
  state: "finished" | "terminated",
  exitCode: number | null,
  reason: string | null,
  why?: string | null,
): void {
  if (run.ended) return;
  run.ended = true;
  const elapsed = stopClock();
  terminal.dropPendingInput();
  setState(state, exitCode, reason);
  ui.state.dataset.ok = String(state === "finished" && exitCode === 0);
  const code = exitCode === null ? "" : ` · exit code ${exitCode}`;
  terminal.note(`── ${state}${code}${reason ? ` · ${reason}` : ""} · ${elapsed} ──`);
  // A limit or the server ended it: say why, unless an error message already did.
  if (why && !ui.message.textContent?.includes(why)) showMessage(why, "info");
  run.ws?.close(1000);
}

/** Ends a run that went wrong: shows why, leaves the UI ready for the next. */
function fail(run: Run, text: string, state: UiState = "error"): void {
  run.ended = true;
  stopClock();
  terminal.dropPendingInput();
  setState(state);
  showMessage(text);
  terminal.note(text, "error");
}

/** After a dropped stream, ask the server how the session ended (if it did). */
async function recoverFinalState(run: Run, id: string): Promise<void> {
  try {
    const info = await getSession(id);
    if (current !== run) return;
    if (info.state === "finished" || info.state === "terminated") {
      setState(info.state, info.exitCode, info.reason);
      showMessage(`The session ended meanwhile: ${info.state}${info.reason ? ` (${info.reason})` : ""}.`, "info");
    } else if (info.state) {
      showMessage(`The session is still ${info.state} on the server; it ends by itself when its time is up.`, "info");
    }
  } catch {
    // the server is unreachable too; the message already says the connection dropped
  }
}

function stop(): void {
  const run = current;
  if (!run || run.ended) return;
  if (run.ws?.readyState === WebSocket.OPEN) {
    run.ws.send(JSON.stringify({ type: "terminate" } satisfies ClientMessage));
  } else if (run.id) {
    deleteSession(run.id).catch((error: unknown) =>
      showMessage(`Could not stop the program: ${error instanceof ApiError ? error.message : String(error)}`),
    );
  } else {
    // POST /session still in flight: run() deletes the session when it answers.
    fail(run, "Stopped before the program started.", "terminated");
  }
}

// ---- controls ------------------------------------------------------------

ui.run.addEventListener("click", () => void run());
ui.stop.addEventListener("click", () => stop());
ui.eof.addEventListener("click", () => {
  send({ type: "eof" });
  terminal.note("^D (end of input sent)");
  terminal.focus();
});
ui.clear.addEventListener("click", () => {
  terminal.term.clear();
  terminal.focus();
});

// Ctrl+Enter (Cmd+Enter on macOS) runs from anywhere, including the editor.
window.addEventListener(
  "keydown",
  (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      event.stopPropagation();
      void run();
    }
  },
  { capture: true },
);

setState("idle", null, null);
void loadLanguages();
