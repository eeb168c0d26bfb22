// Who is online in one room, as the client knows it: the count the server
// gives, and the first members in the server's order (name, then id) as far as
// the pages asked for so far reach. Diffs (joins, leaves) update both without
// rebuilding anything, so a room of 10,000 stays cheap.

/** By case-folded name, then by id: the order the hub pages members in. */
export function compareMembers(a, b) {
  if (a.key !== b.key) return codePointCompare(a.key, b.key);
  return codePointCompare(a.id, b.id);
}

/** Compare as code points (the server's order), not UTF-16 units. */
function codePointCompare(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    const xs = x >= 0xd800 && x <= 0xdfff;
    const ys = y >= 0xd800 && y <= 0xdfff;
    // A surrogate stands for a code point above U+FFFF: after every other unit.
    if (xs !== ys) return xs ? 1 : -1;
    return x - y;
  }
  return a.length - b.length;
}

/** {id, name, key}: key is the name as it sorts; null for a malformed entry. */
function cleanMember(m) {
  if (!m || typeof m.id !== "string" || !m.id) return null;
  const name = typeof m.name === "string" && m.name ? m.name : m.id;
  // Upper then lower case is close to Python's str.casefold ("ß" and "SS" both fold to "ss").
  return { id: m.id, name, key: name.toUpperCase().toLowerCase() };
}

export class Roster {
  constructor() {
    this.online = 0; // members online now, by the server's count
    this.members = []; // the first members online, sorted; all of them when `more` is false
    this.more = false; // further members exist beyond `members`
    this.loaded = false; // a snapshot came
    this.loadingMore = false; // a members page is on its way
    this._byId = new Map(); // id -> member of `members`
  }

  /** A snapshot (`joined`, the first `presence`, or a v1 `presence`): replaces everything. */
  snapshot({ online, members, more }) {
    const list = (Array.isArray(members) ? members : []).map(cleanMember).filter(Boolean);
    list.sort(compareMembers);
    this.members = [];
    this._byId.clear();
    for (const m of list) {
      if (this._byId.has(m.id)) continue;
      this._byId.set(m.id, m);
      this.members.push(m);
    }
    this.more = Boolean(more);
    this.online = Number.isInteger(online) ? online : this.members.length;
    this.loaded = true;
  }

  /**
   * A diff: leaves go, joins come in at their place when they fall among the
   * members held (beyond them, a later page brings them).
   * Returns {added: member[], removed: id[]} as applied to `members`.
   */
  apply({ online, joins, leaves }) {
    const removed = [];
    for (const id of Array.isArray(leaves) ? leaves : []) {
      if (this._remove(id)) removed.push(id);
    }
    const added = this._insertAll(joins);
    if (Number.isInteger(online)) this.online = online;
    else this.online = Math.max(this.members.length, this.online + added.length - removed.length);
    return { added, removed };
  }

  /** A `members` page that follows the ones held. Returns {added, removed: []}. */
  page({ members, more, online }) {
    this.loadingMore = false;
    const held = this.members.length;
    const added = this._insertAll(members, { all: true });
    this.more = Boolean(more);
    if (Number.isInteger(online)) this.online = online;
    this.loaded = this.loaded || held > 0 || added.length > 0 || !more;
    return { added, removed: [] };
  }

  /** The id a next page starts after. */
  lastId() {
    return this.members.at(-1)?.id ?? null;
  }

  has(id) {
    return this._byId.has(id);
  }

  /** Where `member` is, or would go, in `members` (binary search). */
  indexOf(member) {
    let lo = 0;
    let hi = this.members.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (compareMembers(this.members[mid], member) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  _insertAll(members, { all = false } = {}) {
    const added = [];
    for (const raw of Array.isArray(members) ? members : []) {
      const m = cleanMember(raw);
      if (!m) continue;
      const held = this._byId.get(m.id);
      if (held?.name === m.name) continue; // known already (a diff can repeat a snapshot)
      if (held) this._remove(m.id); // renamed: it moves
      const at = this.indexOf(m);
      // Past the last member held while more exist: not ours to show yet.
      if (!all && this.more && at >= this.members.length) continue;
      this.members.splice(at, 0, m);
      this._byId.set(m.id, m);
      added.push(m);
    }
    return added;
  }

  _remove(id) {
    const m = this._byId.get(id);
    if (!m) return false;
    this._byId.delete(id);
    this.members.splice(this.indexOf(m), 1); // (name, id) is unique: found exactly
    return true;
  }
}
