// The one way the dashboard talks to the server: same-origin fetch with the session cookies,
// the CSRF header on changes, the chosen workspace, and problem+json turned into ApiError.

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly title: string,
    readonly detail: string,
  ) {
    super(detail || title);
  }
}

export const API = "/api/v1";
const WORKSPACE_KEY = "cloudlet.workspace";
let workspace: string | null = localStorage.getItem(WORKSPACE_KEY);
let onSignedOut: () => void = () => {};

export function currentWorkspace(): string | null {
  return workspace;
}

export function setWorkspace(id: string | null): void {
  workspace = id;
  if (id) localStorage.setItem(WORKSPACE_KEY, id);
  else localStorage.removeItem(WORKSPACE_KEY);
}

export function whenSignedOut(fn: () => void): void {
  onSignedOut = fn;
}

function cookie(name: string): string {
  const found = document.cookie.split("; ").find((c) => c.startsWith(name + "="));
  return found ? decodeURIComponent(found.slice(name.length + 1)) : "";
}

function headers(method: string, json: boolean): Headers {
  const h = new Headers({ Accept: "application/json, application/problem+json" });
  if (json) h.set("Content-Type", "application/json");
  if (method !== "GET") h.set("X-CSRF-Token", cookie("cloudlet_csrf"));
  if (workspace) h.set("X-Cloudlet-Workspace", workspace);
  return h;
}

async function problem(res: Response): Promise<ApiError> {
  try {
    const body = await res.json();
    return new ApiError(res.status, body.code ?? "http_error", body.title ?? res.statusText, body.detail ?? "");
  } catch {
    return new ApiError(res.status, "http_error", res.statusText, `HTTP ${res.status}`);
  }
}

let refreshing: Promise<boolean> | null = null;
let renewal: ReturnType<typeof setTimeout> | undefined;

/** Renew the session ahead of its expiry, so calls never meet an expired access cookie. */
export function scheduleRenewal(expiresIn: number | null): void {
  clearTimeout(renewal);
  if (expiresIn !== null) renewal = setTimeout(() => void renewSession(), Math.max(5, expiresIn * 0.8) * 1000);
}

/** Renew the session from its refresh cookie, once for all callers asking at the same time. */
export function renewSession(): Promise<boolean> {
  refreshing ??= fetch(`${API}/auth/session/refresh`, { method: "POST", headers: headers("POST", false) })
    .then(async (r) => {
      if (r.ok) scheduleRenewal(((await r.json()) as { expires_in: number }).expires_in);
      return r.ok;
    })
    .catch(() => false)
    .finally(() => setTimeout(() => (refreshing = null), 0));
  return refreshing;
}

export async function request<T>(method: string, path: string, body?: unknown, retry = true): Promise<T> {
  const isForm = body instanceof FormData || body instanceof Blob;
  const send = () =>
    fetch(API + path, {
      method,
      headers: headers(method, body !== undefined && !isForm),
      body: body === undefined ? undefined : isForm ? (body as BodyInit) : JSON.stringify(body),
    });
  let res: Response;
  try {
    res = await send();
  } catch (err) {
    // A read cut by a network blip (the browser drops requests in flight when the host's
    // interfaces change) is tried once more; a change is never sent twice.
    if (method !== "GET") throw err;
    await new Promise((r) => setTimeout(r, 300));
    res = await send();
  }
  if (res.status === 401 && retry && !path.startsWith("/auth/session")) {
    if (await renewSession()) return request<T>(method, path, body, false);
    onSignedOut();
  }
  if (!res.ok) throw await problem(res);
  if (res.status === 204) return undefined as T;
  const type = res.headers.get("content-type") ?? "";
  return (type.includes("json") ? await res.json() : await res.text()) as T;
}

export const api = {
  get: <T>(path: string) => request<T>("GET", path),
  post: <T>(path: string, body?: unknown) => request<T>("POST", path, body ?? {}),
  put: <T>(path: string, body?: unknown) => request<T>("PUT", path, body ?? {}),
  patch: <T>(path: string, body?: unknown) => request<T>("PATCH", path, body ?? {}),
  del: <T>(path: string) => request<T>("DELETE", path),
};

/** A websocket URL on this server for an API path, in the chosen workspace. The session
 * cookie authenticates it (the server checks the page's origin). */
export function wsUrl(path: string, params: Record<string, string> = {}): string {
  const url = new URL(API + path, window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  if (workspace) url.searchParams.set("workspace", workspace);
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  return url.toString();
}

export function errorText(err: unknown): string {
  if (err instanceof ApiError) return err.detail ? `${err.title}: ${err.detail}` : err.title;
  return err instanceof Error ? err.message : String(err);
}

export const q = encodeURIComponent;
