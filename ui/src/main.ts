// icee browser UI: wires the editor, the terminal and the session protocol.
//
// One run: POST /session (tty with the terminal's size, or pipes) -> open
// WS /ws/session/{id} -> stream output into the terminal, keys (tty) or typed
// lines (pipes) out as "input" messages -> a final "finished"/"terminated"
// state with the stages' usage (or an error / a dropped connection).

import "@xterm/xterm/css/xterm.css";
import "./style.css";
import {
  ApiError,
  type ClientMessage,
  closeNeedsToken,
  createSession,
  deleteSession,
  describeClose,
  getSession,
  hasToken,
  type Language,
  listLanguages,
  parseUsage,
  type ServerMessage,
  setToken,
  tokenProblem,
  type Usage,
  webSocketProtocols,
  webSocketUrl,
} from "./api";
import { CodeEditor } from "./editor";
import { STARTERS, starterFor } from "./starters";
import { type TerminalMode, TerminalPane } from "./terminal";

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
  mode: TerminalMode; // fixed for the run: the session was created with or without a pty
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
  interrupt: $<HTMLButtonElement>("interrupt"),
  modeTty: $<HTMLInputElement>("mode-tty"),
  modePipe: $<HTMLInputElement>("mode-pipe"),
  terminalHint: $("terminal-hint"),
  terminalPane: $("terminal"),
  waitingFlag: $("waiting-flag"),
  tokenButton: $<HTMLButtonElement>("token-button"),
  tokenForm: $<HTMLFormElement>("token-form"),
  tokenInput: $<HTMLInputElement>("token"),
  tokenForget: $<HTMLButtonElement>("token-forget"),
  tokenProblem: $("token-problem"),
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
  waiting: "waiting for input",
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
  remove(key: string): void {
    try {
      localStorage.removeItem(`icee.${key}`);
    } catch {
      // storage disabled
    }
  },
};

const HINTS: Record<TerminalMode, string> = {
  tty: "Ctrl+C interrupts · Ctrl+D ends input",
  pipe: "Enter sends a line · stderr in red",
};

let language = storage.get("language") ?? "python";
let mode: TerminalMode = storage.get("mode") === "pipe" ? "pipe" : "tty";
let current: Run | null = null;
/** What to do again once the user gave a token: the call that got 401/403. */
let afterToken: (() => void) | null = null;
let resizeTimer: number | undefined;
let timer: number | undefined;
let startedAt = 0;

const editor = new CodeEditor({
  parent: $("editor"),
  language,
  doc: storage.get(`draft.${language}`) ?? starterFor(language),
  onChange: (doc) => storage.set(`draft.${language}`, doc),
});

const terminal = new TerminalPane($("terminal"), {
  onRaw: (data) => send({ type: "input", data }),
  onLine: (data) => send({ type: "input", data }),
  onEof: () => send({ type: "eof" }),
  onInterrupt: () => send({ type: "signal", signal: "SIGINT" }),
  onResize: () => scheduleResize(),
});
setMode(mode);
terminal.note("Run (Ctrl+Enter) starts your program; its output shows here.");
terminal.note("Type its input here; Ctrl+C interrupts it, Ctrl+D ends its input.");

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
  ui.interrupt.disabled = !active;
  // The mode is fixed when the session is created.
  ui.modeTty.disabled = active;
  ui.modePipe.disabled = active;
  terminal.inputEnabled = active;
  const waiting = state === "waiting";
  ui.waitingFlag.hidden = !waiting;
  ui.terminalPane.classList.toggle("waiting", waiting);
  // The program waits for the user: put the keyboard where the input goes,
  // unless they are busy in the editor.
  if (waiting && !document.activeElement?.closest(".editor, .token-form")) terminal.focus();
  // Never leave the keyboard focus on a control that just got disabled.
  const focused = document.activeElement;
  if ((focused instanceof HTMLButtonElement || focused instanceof HTMLInputElement) && focused.disabled) {
    if (active) terminal.focus();
    else ui.run.focus();
  }
  const parts = [`State: ${state}`];
  if (exitCode !== undefined && exitCode !== null) parts.push(`exit code ${exitCode}`);
  if (reason) parts.push(reason);
  ui.announce.textContent = parts.join(", ");
}

function setMode(next: TerminalMode): void {
  mode = next;
  storage.set("mode", next);
  ui.modeTty.checked = next === "tty";
  ui.modePipe.checked = next === "pipe";
  ui.terminalHint.textContent = HINTS[next];
  if (!current || current.ended) terminal.mode = next;
}

for (const radio of [ui.modeTty, ui.modePipe]) {
  radio.addEventListener("change", () => {
    if (radio.checked) setMode(radio.value === "pipe" ? "pipe" : "tty");
  });
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

/** "3.9 s", or "850 ms" under a second. */
function formatMillis(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : formatElapsed(ms);
}

function formatBytes(bytes: number): string {
  if (bytes < 1e6) return `${Math.max(1, Math.round(bytes / 1e3))} kB`;
  return `${bytes < 1e7 ? (bytes / 1e6).toFixed(1) : Math.round(bytes / 1e6)} MB`;
}

/** What the stages cost, for the finished line: "compile 1.2 s · CPU 0.8 s · 12 MB". */
function describeUsage(usage: Usage): string[] {
  const parts: string[] = [];
  const compile = usage.compile;
  if (compile?.wallMillis != null) parts.push(`compile ${formatMillis(compile.wallMillis)}`);
  // The run stage, or the compile stage when the program never ran (compile error).
  const stage = usage.run ?? compile;
  if (stage?.cpuMillis != null) parts.push(`CPU ${formatMillis(stage.cpuMillis)}`);
  if (stage?.memoryBytes != null) parts.push(formatBytes(stage.memoryBytes));
  return parts;
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
  if (ui.language.dataset.loaded !== "failed") {
    fillLanguages([{ id: language, displayName: language, version: "" }]);
  }
  try {
    fillLanguages(await listLanguages());
    ui.language.dataset.loaded = "true";
  } catch (error) {
    ui.language.dataset.loaded = "failed";
    fillLanguages(Object.keys(STARTERS).map((id) => ({ id, displayName: id, version: "" })));
    if (error instanceof ApiError && error.needsToken) {
      askForToken(error, null); // giving a token reloads the list
      return;
    }
    const why = error instanceof ApiError ? error.message : String(error);
    showMessage(`Could not load the list of languages: ${why}`);
  }
}

// ---- API token (when the server has tokens on) ------------------------------

function useToken(value: string | null): void {
  setToken(value);
  if (value) storage.set("token", value);
  else storage.remove("token");
  ui.tokenButton.hidden = !value;
}

/** Shows the token field; `retry` runs once a token is given. */
function askForToken(error: ApiError | string, retry: (() => void) | null): void {
  const why = typeof error === "string" ? error : error.message;
  const refused = typeof error === "string" ? hasToken() : error.status === 403;
  ui.tokenProblem.textContent = refused ? `The server refused the token: ${why}` : why;
  afterToken = retry;
  ui.tokenForm.hidden = false;
  ui.tokenInput.value = "";
  ui.tokenInput.focus();
}

ui.tokenForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const value = ui.tokenInput.value.trim();
  const problem = tokenProblem(value);
  if (problem) {
    ui.tokenProblem.textContent = problem;
    ui.tokenInput.focus();
    return;
  }
  useToken(value);
  ui.tokenForm.hidden = true;
  ui.tokenInput.value = "";
  clearMessages();
  const retry = afterToken;
  afterToken = null;
  if (ui.language.dataset.loaded !== "true") void loadLanguages();
  retry?.();
});

ui.tokenForget.addEventListener("click", () => {
  useToken(null);
  ui.tokenInput.value = "";
  ui.tokenForm.hidden = true;
  ui.run.focus();
});

ui.tokenButton.addEventListener("click", () => {
  ui.tokenProblem.textContent = "Give another token, or forget this one.";
  afterToken = null;
  ui.tokenForm.hidden = false;
  ui.tokenInput.focus();
});

// ---- a run ---------------------------------------------------------------

function send(message: ClientMessage): void {
  if (!current || current.ended) return;
  if (current.ws?.readyState === WebSocket.OPEN) current.ws.send(JSON.stringify(message));
  else current.pendingInput.push(message);
}

async function startRun(): Promise<void> {
  if (current && !current.ended) return;
  const run: Run = { id: null, mode, ws: null, ended: false, pendingInput: [] };
  current = run;
  clearMessages();
  terminal.mode = run.mode;
  terminal.reset();
  terminal.fit();
  startClock();
  setState("starting", null, null);
  terminal.focus();
  try {
    run.id = await createSession(language, editor.code, run.mode === "tty" ? terminal.size : null);
  } catch (error) {
    fail(run, `Could not start the program: ${error instanceof ApiError ? error.message : String(error)}`);
    if (error instanceof ApiError && error.needsToken) askForToken(error, () => void startRun());
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
  const ws = new WebSocket(webSocketUrl(id), webSocketProtocols());
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
    const why = describeClose(event.code, event.reason);
    fail(run, `${what}: ${why}.`, "disconnected");
    if (closeNeedsToken(event.code)) {
      askForToken(why, null);
      return;
    }
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
        finish(run, message.state, message.exitCode ?? null, message.reason ?? null, message.message, message.usage);
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
  rawUsage?: unknown,
): void {
  if (run.ended) return;
  run.ended = true;
  const elapsed = stopClock();
  terminal.dropPendingInput();
  setState(state, exitCode, reason);
  ui.state.dataset.ok = String(state === "finished" && exitCode === 0);
  const parts: string[] = [state];
  if (exitCode !== null) parts.push(`exit code ${exitCode}`);
  if (reason) parts.push(reason);
  parts.push(elapsed, ...describeUsage(parseUsage(rawUsage)));
  const line = parts.join(" · ");
  terminal.note(`── ${line} ──`);
  ui.announce.textContent = line;
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
  } catch (error) {
    // A WebSocket refused at the handshake (401/403) only shows as a dropped
    // connection; the same call over HTTP says why.
    if (error instanceof ApiError && error.needsToken && current === run) askForToken(error, null);
    // Otherwise the server is unreachable too; the message already says the connection dropped.
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
    // POST /session still in flight: startRun() deletes the session when it answers.
    fail(run, "Stopped before the program started.", "terminated");
  }
}

/** Tells a tty session the terminal's new size (debounced: resizing fires a burst). */
function scheduleResize(): void {
  window.clearTimeout(resizeTimer);
  resizeTimer = window.setTimeout(() => {
    if (!current || current.ended || current.mode !== "tty" || current.id === null) return;
    send({ type: "resize", ...terminal.size });
  }, 100);
}

/** Ctrl-C: in a tty the pty turns it into SIGINT (and echoes ^C); with pipes, signal directly. */
function interrupt(): void {
  const run = current;
  if (!run || run.ended) return;
  if (run.mode === "tty") send({ type: "input", data: "\x03" });
  else {
    terminal.note("^C");
    send({ type: "signal", signal: "SIGINT" });
  }
}

// ---- controls ------------------------------------------------------------

ui.run.addEventListener("click", () => void startRun());
ui.stop.addEventListener("click", () => stop());
ui.interrupt.addEventListener("click", () => {
  interrupt();
  terminal.focus();
});
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
      void startRun();
    }
  },
  { capture: true },
);

useToken(storage.get("token"));
setState("idle", null, null);
void loadLanguages();
