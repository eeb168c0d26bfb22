// Where a tab was, so a reload resumes instead of starting over: the last id
// per channel (for hello.resume) and the open conversation. Kept in
// sessionStorage (per tab, per hub and user), so another tab starts afresh.

function key(hub, userId) {
  return `hub-chat:${hub}:place:${userId}`;
}

/** {active, lastIds} saved by this tab for this user, or null. */
export function loadPlace(hub, userId) {
  if (!userId) return null;
  try {
    const data = JSON.parse(globalThis.sessionStorage?.getItem(key(hub, userId)) ?? "null");
    if (!data || typeof data !== "object") return null;
    const lastIds = {};
    for (const [channel, id] of Object.entries(data.lastIds ?? {})) {
      if (typeof id === "string" && /^\d+-\d+$/.test(id)) lastIds[channel] = id;
    }
    return { active: typeof data.active === "string" ? data.active : null, lastIds };
  } catch {
    return null; // storage blocked or not JSON: start afresh
  }
}

/** Remember `place` ({active, lastIds}); null forgets it. */
export function savePlace(hub, userId, place) {
  if (!userId) return;
  try {
    if (place) globalThis.sessionStorage?.setItem(key(hub, userId), JSON.stringify(place));
    else globalThis.sessionStorage?.removeItem(key(hub, userId));
  } catch {
    /* storage blocked or full: a reload starts afresh */
  }
}
