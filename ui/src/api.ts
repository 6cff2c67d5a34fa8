// The icee HTTP API and WebSocket protocol, as the browser sees them.
// URLs are resolved against the page, so the UI also works behind an
// ingress that serves icee under a path prefix.

export interface Language {
  id: string;
  displayName: string;
  version: string;
}

export type SessionState = "pending" | "running" | "waiting" | "finished" | "terminated";

export type ServerMessage =
  | { type: "stdout" | "stderr"; data: string }
  | {
      type: "state";
      state: SessionState;
      exitCode?: number | null;
      reason?: string | null;
      message?: string | null; // with a final state: why it ended, for people
    }
  | { type: "error"; message: string };

export type ClientMessage =
  | { type: "input"; data: string }
  | { type: "eof" }
  | { type: "terminate" };

/** An API call that failed; `message` is meant for the user. */
export class ApiError extends Error {}

export function apiUrl(path: string): URL {
  return new URL(path, document.baseURI);
}

export function webSocketUrl(sessionId: string): string {
  const url = apiUrl(`ws/session/${encodeURIComponent(sessionId)}`);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

async function call(method: string, path: string, body?: unknown): Promise<unknown> {
  let response: Response;
  try {
    response = await fetch(apiUrl(path), {
      method,
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
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
  if (!response.ok) {
    const detail = describeDetail((json as { detail?: unknown } | undefined)?.detail);
    const status = `${response.status}${response.statusText ? ` ${response.statusText}` : ""}`;
    throw new ApiError(detail ? `${detail} (HTTP ${status})` : `the server answered HTTP ${status}`);
  }
  if (json === undefined && text) throw new ApiError(`Unexpected answer from ${path}: not JSON.`);
  return json;
}

/** FastAPI's `detail`: a string, or a list of validation errors. */
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

export async function createSession(language: string, code: string): Promise<string> {
  const json = (await call("POST", "session", { language, code })) as { sessionId?: unknown };
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
};

export function describeClose(code: number, reason: string): string {
  return `${reason || CLOSE_CODES[code] || "connection closed"} (WebSocket close code ${code})`;
}
