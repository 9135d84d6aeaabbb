// The page's calls to turnlog's API: the session cookie goes by itself, writes carry the CSRF header,
// and every error becomes a Problem with the problem+json `detail` to show.

const CSRF_COOKIE = "turnlog_csrf";
const CSRF_HEADER = "X-Turnlog-CSRF";
const RETRIES_ON_503 = 5;

export class Problem extends Error {
  constructor(status, body) {
    const detail = (body && body.detail) || `the server answered ${status}`;
    super(detail);
    this.status = status;
    this.title = (body && body.title) || "Error";
    this.detail = detail;
    this.body = body || {};
  }
}

function cookie(name) {
  for (const part of document.cookie.split(";")) {
    const [key, ...rest] = part.trim().split("=");
    if (key === name) return decodeURIComponent(rest.join("="));
  }
  return "";
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// One call: `json` or `form` is the body; `headers` adds to the defaults. Resolves to the parsed body (null on 204).
export async function call(method, path, { json, form, headers = {} } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers }, credentials: "same-origin" };
  if (method !== "GET" && method !== "HEAD") init.headers[CSRF_HEADER] = cookie(CSRF_COOKIE);
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form;
  }
  for (let attempt = 0; ; attempt += 1) {
    let response;
    try {
      response = await fetch(path, init);
    } catch {
      throw new Problem(0, { title: "Network error", detail: "the server could not be reached: check the connection and try again" });
    }
    // A projection still catching up answers 503 with Retry-After: a read waits and asks again.
    if (response.status === 503 && method === "GET" && attempt < RETRIES_ON_503) {
      const seconds = Number(response.headers.get("Retry-After")) || 1;
      await sleep(Math.min(seconds, 2) * 1000);
      continue;
    }
    if (response.status === 204) return null;
    const type = response.headers.get("Content-Type") || "";
    const body = type.includes("json") ? await response.json().catch(() => null) : null;
    if (!response.ok) throw new Problem(response.status, body);
    return body;
  }
}

export const get = (path) => call("GET", path);
export const post = (path, json, headers) => call("POST", path, { json, headers });
export const patch = (path, json) => call("PATCH", path, { json });

export function newIdempotencyKey() {
  return crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(16).slice(2)}`;
}
