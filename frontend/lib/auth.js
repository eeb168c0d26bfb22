// Guest sign-in and where its token lives. The token never goes into a URL: it
// is kept in localStorage (per hub), sent in the hello frame and, for HTTP, in
// an Authorization header.

export class LoginError extends Error {
  constructor(message, { status = 0, disabled = false } = {}) {
    super(message);
    this.status = status;
    this.disabled = disabled;
  }
}

function storageKey(hub, what) {
  return `hub-chat:${hub}:${what}`;
}

function read(key) {
  try {
    return globalThis.localStorage?.getItem(key) ?? null;
  } catch {
    return null; // storage blocked (privacy mode, sandboxed iframe)
  }
}

function write(key, value) {
  try {
    if (value == null) globalThis.localStorage?.removeItem(key);
    else globalThis.localStorage?.setItem(key, value);
  } catch {
    /* storage blocked: the session lasts as long as the page */
  }
}

/** Remembered guest session for a hub: {token, user} or null. */
export function loadGuest(hub) {
  const raw = read(storageKey(hub, "guest"));
  if (!raw) return null;
  try {
    const data = JSON.parse(raw);
    return data && typeof data.token === "string" ? data : null;
  } catch {
    return null;
  }
}

export function saveGuest(hub, session) {
  write(storageKey(hub, "guest"), session ? JSON.stringify(session) : null);
}

export function loadName(hub) {
  return read(storageKey(hub, "name")) ?? "";
}

export function saveName(hub, name) {
  write(storageKey(hub, "name"), name);
}

/** POST /api/login {name} -> {token, user}. */
export async function guestLogin(hub, name, { signal } = {}) {
  let res;
  try {
    res = await fetch(new URL("api/login", withSlash(hub)), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name }),
      signal,
    });
  } catch (err) {
    if (err?.name === "AbortError") throw err;
    throw new LoginError("The hub cannot be reached. Check your connection and try again.");
  }
  if (res.status === 404) {
    throw new LoginError("This hub does not allow guest sign-in. Ask its owner for access.", {
      status: 404,
      disabled: true,
    });
  }
  let body = null;
  try {
    body = await res.json();
  } catch {
    /* not JSON */
  }
  if (!res.ok || !body?.token) {
    const msg = body?.message || body?.error?.message || `Sign-in failed (HTTP ${res.status}). Try again.`;
    throw new LoginError(typeof msg === "string" ? msg : "Sign-in failed. Try again.", { status: res.status });
  }
  return { token: body.token, user: body.user ?? null };
}

/** The hub base URL with a trailing slash, so relative paths resolve under it. */
export function withSlash(hub) {
  const url = new URL(hub, globalThis.location?.href);
  if (!url.pathname.endsWith("/")) url.pathname += "/";
  url.search = "";
  url.hash = "";
  return url.toString();
}

/** The user a JWT names (sub, name), read without checking it: for display only. */
export function peekToken(token) {
  try {
    const part = String(token).split(".")[1];
    const bin = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
    const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0))));
    return { id: claims.sub ?? null, name: claims.name ?? null, exp: claims.exp ?? null };
  } catch {
    return null;
  }
}
