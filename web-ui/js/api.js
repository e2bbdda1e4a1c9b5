// The gateway's REST API (same origin) and the bearer token.
//
// The token is kept in sessionStorage only: it is gone when the tab closes,
// never put in a URL, and sent only as an Authorization header to this
// origin (the page's Content-Security-Policy allows no other).

const KEY = "overpass.token";

export const token = {
  get() {
    try {
      return sessionStorage.getItem(KEY) || "";
    } catch {
      return "";
    }
  },
  set(v) {
    try {
      if (v) sessionStorage.setItem(KEY, v);
      else sessionStorage.removeItem(KEY);
    } catch {
      /* storage disabled: the token lasts as long as this page */
    }
    listeners.forEach((f) => f(!!v));
  },
};

const listeners = [];
/** Calls f(hasToken) whenever the token is set or forgotten. */
export function onTokenChange(f) {
  listeners.push(f);
}

/** An error answer: the HTTP status and the API's {field, message}. */
export class ApiError extends Error {
  constructor(status, field, message) {
    super(message);
    this.status = status;
    this.field = field;
  }
}

/**
 * request("GET", "/api/v1/routes") -> {status, etag, body}. Throws ApiError
 * on a non-2xx answer (with the API's field and message) or a network
 * failure (status 0).
 */
export async function request(method, path, { body, ifMatch, text = false } = {}) {
  const headers = { Accept: text ? "text/plain" : "application/json" };
  const t = token.get();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (ifMatch != null) headers["If-Match"] = `"${ifMatch}"`;
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch (e) {
    throw new ApiError(0, "network", `the gateway did not answer (${e.message})`);
  }
  const etag = resp.headers.get("ETag");
  if (!resp.ok) {
    let field = "body";
    let message = `${resp.status} ${resp.statusText}`;
    try {
      const j = await resp.json();
      if (j && j.error) ({ field, message } = j.error);
    } catch {
      /* not JSON */
    }
    throw new ApiError(resp.status, field, message);
  }
  const data = text ? await resp.text() : await resp.json();
  return { status: resp.status, etag, body: data };
}

export const get = async (path) => (await request("GET", path)).body;

/** "10.244.1.0/24" -> "/api/v1/routes/10.244.1.0/24". */
export const routePath = (prefix) => `/api/v1/routes/${prefix.split("/").map(encodeURIComponent).join("/")}`;
