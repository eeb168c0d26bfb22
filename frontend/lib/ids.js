// Message ids are "<ms>-<seq>" (Redis Stream ids). They increase strictly within
// a channel, so ordering compares both parts as numbers, never as strings.

/** Split "1732212345678-3" into [1732212345678, 3]; anything else sorts first. */
export function parseId(id) {
  const m = /^(\d+)-(\d+)$/.exec(String(id ?? ""));
  return m ? [Number(m[1]), Number(m[2])] : [-1, -1];
}

/** Negative, zero or positive, like Array.prototype.sort wants. */
export function compareIds(a, b) {
  const [am, as] = parseId(a);
  const [bm, bs] = parseId(b);
  return am === bm ? as - bs : am - bm;
}

/** The later of two ids; either may be null. */
export function maxId(a, b) {
  if (!a) return b ?? null;
  if (!b) return a;
  return compareIds(a, b) >= 0 ? a : b;
}

/** A unique reference for a client frame (send retries reuse it). */
export function newRef() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  return `r${Date.now().toString(36)}${Math.random().toString(36).slice(2, 10)}`;
}

export const ROOM_RE = /^[a-z0-9_-]{1,64}$/;

/** "room:lobby" -> {kind: "room", name: "lobby"}. */
export function splitChannel(channel) {
  const i = String(channel).indexOf(":");
  return i < 0 ? { kind: "", name: channel } : { kind: channel.slice(0, i), name: channel.slice(i + 1) };
}
