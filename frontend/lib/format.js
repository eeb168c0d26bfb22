// Words and numbers people read: times of messages, error sentences, states.

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
const dayFmt = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "short" });

/** "14:05" today, "Nov 20, 14:05" before. */
export function shortTime(ts, now = Date.now()) {
  if (!ts) return "";
  const d = new Date(ts);
  const today = new Date(now);
  const sameDay = d.toDateString() === today.toDateString();
  return sameDay ? timeFmt.format(d) : `${dayFmt.format(d)}, ${timeFmt.format(d)}`;
}

export function fullTime(ts) {
  return ts ? fullFmt.format(new Date(ts)) : "";
}

export function isoTime(ts) {
  return ts ? new Date(ts).toISOString() : "";
}

const countFmt = new Intl.NumberFormat();

/** 13731 -> "13,731" (in the reader's locale). */
export function formatCount(n) {
  return countFmt.format(n);
}

/** A title and a sentence for an error frame; the server's message says what to do. */
export function describeError(frame) {
  const after = frame.retry_after ? ` Try again in ${Math.ceil(frame.retry_after)} s.` : "";
  const titles = {
    rate_limited: "Slow down",
    llm_unavailable: "Assistant unavailable",
    llm_error: "The assistant ran into a problem",
    too_long: "Message too long",
    unauthorized: "Signed out",
    forbidden: "Not allowed",
    not_found: "Not found",
    invalid: "Not accepted",
    unavailable: "Temporarily unavailable",
    internal: "Something went wrong on the hub",
  };
  const title = titles[frame.code] ?? "Error";
  let message = frame.message || "";
  if (after && !/\d+\s*s/.test(message)) message += after;
  return { title, message: message.trim() };
}

export const STATE_LABELS = {
  idle: "Not connected",
  connecting: "Connecting…",
  open: "Connected",
  reconnecting: "Reconnecting…",
  offline: "Offline",
};

export function initials(name) {
  // By code point, so a name that starts with an emoji keeps it whole (no lone surrogate).
  const parts = String(name || "?").trim().split(/\s+/).filter(Boolean).map((p) => Array.from(p));
  const letters = parts.length > 1 ? parts[0][0] + parts[1][0] : (parts[0] ?? ["?"]).slice(0, 2).join("");
  return letters.toUpperCase();
}

/** A stable hue for a name, for avatars in rooms. */
export function hueFor(text) {
  let h = 0;
  for (const c of String(text)) h = (h * 31 + c.codePointAt(0)) % 360;
  return h;
}
