// The icee HTTP API and WebSocket protocol, as the browser sees them.
// URLs are resolved against the page, so the UI also works behind an
// ingress that serves icee under a path prefix.

export interface Language {
  id: string;
  displayName: string;
  version: string;
}

export type SessionState = "pending" | "running" | "waiting" | "finished" | "terminated";

/** What one stage (compile or run) cost, from the final state's `usage`. */
export interface StageUsage {
  exitCode: number | null;
  cpuMillis: number | null;
  memoryBytes: number | null;
  wallMillis: number | null;
}

export interface Usage {
  compile?: StageUsage;
  run?: StageUsage;
}

export type ServerMessage =
  | { type: "stdout" | "stderr"; data: string }
  | {
      type: "state";
      state: SessionState;
      exitCode?: number | null;
      reason?: string | null;
      message?: string | null; // with a final state: why it ended, for people
      usage?: unknown; // with a final state: see parseUsage
    }
  | { type: "error"; message: string };

export type Signal = "SIGINT" | "SIGTERM" | "SIGKILL";

export type ClientMessage =
  | { type: "input"; data: string }
  | { type: "eof" }
  | { type: "terminate" }
  | { type: "signal"; signal: Signal }
  | { type: "resize"; cols: number; rows: number };

/** An API call that failed; `message` is meant for the user. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status?: number,
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
  }

  /** 401 (no token) or 403 (token refused): the user can fix it by giving a token. */
  get needsToken(): boolean {
    return this.status === 401 || this.status === 403;
  }
}

// ---- API token -------------------------------------------------------------
// Off by default on the server; when it answers 401 the UI asks for a token and
// sends it as a bearer token on HTTP, and as a WebSocket subprotocol (browsers
// cannot set headers on a WebSocket): ["icee", "bearer.<token>"].

let token: string | null = null;

export function setToken(value: string | null): void {
  token = value || null;
}

export function hasToken(): boolean {
  return token !== null;
}

// A subprotocol must be an HTTP token (RFC 7230 tchar), or the browser refuses
// to open the socket at all.
const SUBPROTOCOL_CHARS = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** Why a token cannot be used, or null if it can. */
export function tokenProblem(value: string): string | null {
  if (!value) return "The token is empty.";
  if (!SUBPROTOCOL_CHARS.test(value)) {
    return "The token has characters that cannot travel in a WebSocket header (spaces, quotes, '/', '=', ...).";
  }
  return null;
}

export function webSocketProtocols(): string[] {
  return token ? ["icee", `bearer.${token}`] : [];
}

export function apiUrl(path: string): URL {
  return new URL(path, document.baseURI);
}

export function webSocketUrl(sessionId: string): string {
  const url = apiUrl(`ws/session/${encodeURIComponent(sessionId)}`);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

async function call(method: string, path: string, body?: unknown): Promise<unknown> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  let response: Response;
  try {
    response = await fetch(apiUrl(path), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError("Cannot reach the icee server: check your network connection.");
  }
  const text = await response.text();
  let json: unknown = undefined;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    // not JSON; handled below
  }
  if (!response.ok) throw httpError(response, json);
  if (json === undefined && text) throw new ApiError(`Unexpected answer from ${path}: not JSON.`);
  return json;
}

function httpError(response: Response, json: unknown): ApiError {
  const detail = describeDetail((json as { detail?: unknown } | undefined)?.detail);
  const status = `${response.status}${response.statusText ? ` ${response.statusText}` : ""}`;
  let text = detail ? `${detail} (HTTP ${status})` : `the server answered HTTP ${status}`;
  const retryAfter = parseRetryAfter(response.headers.get("Retry-After"));
  if (retryAfter !== undefined) text += `; try again in ${retryAfter} s`;
  return new ApiError(text, response.status, retryAfter);
}

/** Retry-After: delay-seconds or an HTTP date; seconds from now. */
function parseRetryAfter(value: string | null): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, Math.ceil((date - Date.now()) / 1000));
}

/** FastAPI's `detail`: a string, a list of validation errors, or an object. */
function describeDetail(detail: unknown): string | undefined {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((item: { loc?: unknown[]; msg?: string }) => {
        const where = (item.loc ?? []).filter((part) => part !== "body").join(".");
        return where ? `${where}: ${item.msg ?? "invalid"}` : (item.msg ?? "invalid");
      })
      .join("; ");
  }
  if (detail && typeof detail === "object") {
    const obj = detail as Record<string, unknown>;
    const text = obj.message ?? obj.detail;
    if (typeof text === "string") return typeof obj.limit === "string" ? `${text} (${obj.limit})` : text;
  }
  if (detail !== undefined && detail !== null) return JSON.stringify(detail);
  return undefined;
}

export async function listLanguages(): Promise<Language[]> {
  const json = await call("GET", "languages");
  const list = Array.isArray(json) ? json : (json as { languages?: unknown } | null)?.languages;
  if (!Array.isArray(list)) throw new ApiError("Unexpected answer from /languages: not a list.");
  return list
    .filter((item): item is Record<string, unknown> => typeof item?.id === "string")
    .map((item) => ({
      id: item.id as string,
      displayName: typeof item.displayName === "string" ? item.displayName : (item.id as string),
      version: typeof item.version === "string" ? item.version : "",
    }));
}

export interface TerminalSize {
  cols: number;
  rows: number;
}

/** POST /session; `tty` asks for a pseudo-terminal of that size. */
export async function createSession(language: string, code: string, tty: TerminalSize | null): Promise<string> {
  const body = tty ? { language, code, tty: true, cols: tty.cols, rows: tty.rows } : { language, code };
  const json = (await call("POST", "session", body)) as { sessionId?: unknown };
  if (typeof json?.sessionId !== "string") throw new ApiError("The server did not return a session id.");
  return json.sessionId;
}

export interface SessionInfo {
  state?: string;
  exitCode?: number | null;
  reason?: string | null;
  message?: string | null;
}

export async function getSession(sessionId: string): Promise<SessionInfo> {
  const json = (await call("GET", `session/${encodeURIComponent(sessionId)}`)) as Record<string, unknown>;
  const state = json.state ?? json.phase;
  return {
    state: typeof state === "string" ? state.toLowerCase() : undefined,
    exitCode: typeof json.exitCode === "number" ? json.exitCode : null,
    reason: typeof json.reason === "string" ? json.reason : null,
    message: typeof json.message === "string" ? json.message : null,
  };
}

export async function deleteSession(sessionId: string): Promise<void> {
  await call("DELETE", `session/${encodeURIComponent(sessionId)}`);
}

function numberOrNull(value: unknown): number | null {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

/** The final state's `usage`, keeping only well-formed stages. */
export function parseUsage(raw: unknown): Usage {
  const usage: Usage = {};
  if (!raw || typeof raw !== "object") return usage;
  for (const stage of ["compile", "run"] as const) {
    const item = (raw as Record<string, unknown>)[stage];
    if (!item || typeof item !== "object") continue;
    const fields = item as Record<string, unknown>;
    usage[stage] = {
      exitCode: numberOrNull(fields.exitCode),
      cpuMillis: numberOrNull(fields.cpuMillis),
      memoryBytes: numberOrNull(fields.memoryBytes),
      wallMillis: numberOrNull(fields.wallMillis),
    };
  }
  return usage;
}

const CLOSE_CODES: Record<number, string> = {
  1001: "the server is going away",
  1002: "protocol error",
  1003: "unsupported data",
  1006: "the connection dropped",
  1007: "invalid data",
  1008: "policy violation",
  1009: "message too big",
  1011: "server error",
  1012: "the server is restarting",
  1013: "the server is busy, try again later",
  4401: "an API token is needed",
  4403: "the API token was refused",
  4404: "no such session",
  4409: "another client is already attached",
  4429: "over a quota, try again later",
};

/** Close codes that a token can fix (44xx mirror HTTP statuses). */
export function closeNeedsToken(code: number): boolean {
  return code === 4401 || code === 4403;
}

export function describeClose(code: number, reason: string): string {
  return `${reason || CLOSE_CODES[code] || "connection closed"} (WebSocket close code ${code})`;
}
