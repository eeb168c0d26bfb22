// What the client knows about each channel: its messages (deduplicated by id),
// replies still streaming (deduplicated by (reply, seq)), the user's own sends
// not yet stored, the last id seen (for resume) and, for a room, who is online.
//
// The store holds data only; it says what changed with a "change" event
// ({channel, kind}; for kind "presence" also `change`: {added, removed} or
// {reset: true}) and the view decides how to draw it.

import { compareIds, maxId } from "./ids.js";
import { Roster } from "./roster.js";

/** One line in a channel, whatever its origin (stored, streaming or pending). */
function makeItem(fields) {
  return {
    key: "",
    id: null,
    channel: "",
    author: { id: "", name: "", role: "user" },
    text: "",
    html: null,
    ts: null,
    reply: null,
    streaming: false,
    pending: false,
    failed: null,
    stopReason: null,
    version: 0,
    ...fields,
  };
}

class ChannelState {
  constructor(name) {
    this.name = name;
    this.byId = new Map(); // id -> item (stored messages, and sends once acked)
    this.streams = new Map(); // reply -> item still streaming
    this.pending = new Map(); // ref -> item sent but not yet acked
    this.finished = new Map(); // reply -> id of its stored message
    this.lastId = null; // the latest id received from the server's log
    this.more = null; // older history exists: true/false, null before the first load
    this.loaded = false; // history (or a resume) has filled this channel
    this.loadingOlder = false;
    this.unread = 0;
    this.roster = new Roster(); // a room's online members
    this._sorted = null;
  }
}

const MAX_FINISHED = 500; // bounded memory of finished replies per channel

export class ChatStore extends EventTarget {
  constructor() {
    super();
    this.channels = new Map();
  }

  channel(name) {
    let ch = this.channels.get(name);
    if (!ch) {
      ch = new ChannelState(name);
      this.channels.set(name, ch);
    }
    return ch;
  }

  has(name) {
    return this.channels.has(name);
  }

  drop(name) {
    if (this.channels.delete(name)) this._emit(name, "reset");
  }

  /** The last id seen per channel, for hello.resume. */
  resumePoints() {
    const out = {};
    // A channel whose history has not arrived yet is left out: it reloads instead,
    // so a live message alone never hides the older ones before it.
    for (const [name, ch] of this.channels) if (ch.lastId && ch.loaded) out[name] = ch.lastId;
    return out;
  }

  /** Items of a channel in display order: stored by id, then pending sends, then live streams. */
  list(name) {
    const ch = this.channels.get(name);
    if (!ch) return [];
    if (!ch._sorted) {
      const stored = [...ch.byId.values()].sort((a, b) => compareIds(a.id, b.id));
      ch._sorted = [...stored, ...ch.pending.values(), ...ch.streams.values()];
    }
    return ch._sorted;
  }

  /** Is any reply streaming in this channel? Returns the newest such item or null. */
  streamingIn(name) {
    const ch = this.channels.get(name);
    if (!ch || ch.streams.size === 0) return null;
    return [...ch.streams.values()].at(-1);
  }

  /**
   * A stored message from the server (live, replayed or from history).
   * Returns the item when it is new, null when it was a duplicate.
   */
  addMessage(msg, { emit = true } = {}) {
    if (!msg || !msg.channel || !msg.id) return null;
    const ch = this.channel(msg.channel);
    ch.lastId = maxId(ch.lastId, msg.id);
    const existing = ch.byId.get(msg.id);
    if (existing) {
      // An acked send whose stored copy arrives: fill in what the server knows.
      if (existing.pending || existing.ts == null) {
        Object.assign(existing, { pending: false, ts: msg.ts ?? existing.ts, author: msg.author ?? existing.author });
        existing.version++;
        this._changed(ch, "update", emit);
      }
      return null;
    }
    const fields = {
      id: msg.id,
      channel: msg.channel,
      author: msg.author ?? { id: "", name: "", role: "user" },
      text: msg.text ?? "",
      html: typeof msg.html === "string" ? msg.html : null,
      ts: msg.ts ?? null,
      reply: msg.reply ?? null,
      stopReason: msg.stop_reason ?? null,
    };
    let item;
    const stream = fields.reply ? ch.streams.get(fields.reply) : null;
    const mine = msg.ref ? ch.pending.get(msg.ref) : null;
    if (stream) {
      // The stored copy of a reply we were streaming: it replaces the stream.
      ch.streams.delete(fields.reply);
      item = Object.assign(stream, fields, { streaming: false });
    } else if (mine) {
      ch.pending.delete(msg.ref);
      item = Object.assign(mine, fields, { pending: false, failed: null });
    } else {
      item = makeItem({ ...fields, key: fields.reply ? `r:${fields.reply}` : `m:${msg.id}` });
    }
    if (fields.reply) this._finish(ch, fields.reply, msg.id);
    item.version++;
    ch.byId.set(msg.id, item);
    this._changed(ch, "append", emit);
    return item;
  }

  /** A piece of a streaming reply. Returns true when it changed something. */
  applyDelta(d) {
    if (!d || !d.channel || !d.reply) return false;
    const ch = this.channel(d.channel);
    if (ch.finished.has(d.reply)) return false; // its done (or message) already came
    let item = ch.streams.get(d.reply);
    const isNew = !item;
    if (!item) {
      item = makeItem({
        key: `r:${d.reply}`,
        channel: d.channel,
        reply: d.reply,
        author: d.author ?? { id: "assistant", name: "Assistant", role: "assistant" },
        streaming: true,
        ts: Date.now(),
      });
      item.nextSeq = 0;
      ch.streams.set(d.reply, item);
    }
    const seq = Number(d.seq);
    if (!Number.isInteger(seq) || seq < item.nextSeq) return false; // seen already
    item.text += d.text ?? "";
    item.nextSeq = seq + 1;
    item.version++;
    this._changed(ch, isNew ? "append" : "update", true);
    return true;
  }

  /** The end of a reply: its final text and html replace whatever streamed. */
  applyDone(d) {
    if (!d || !d.channel || !d.reply || !d.id) return null;
    const ch = this.channel(d.channel);
    ch.lastId = maxId(ch.lastId, d.id);
    const stream = ch.streams.get(d.reply);
    ch.streams.delete(d.reply);
    this._finish(ch, d.reply, d.id);
    if (ch.byId.has(d.id)) {
      this._changed(ch, "update", true);
      return null;
    }
    const item = stream ?? makeItem({ key: `r:${d.reply}`, reply: d.reply, channel: d.channel });
    Object.assign(item, {
      id: d.id,
      text: d.text ?? item.text,
      html: typeof d.html === "string" ? d.html : null,
      streaming: false,
      stopReason: d.stop_reason ?? null,
      author: d.author ?? item.author ?? { id: "assistant", name: "Assistant", role: "assistant" },
      ts: d.ts ?? item.ts ?? Date.now(),
    });
    item.version++;
    ch.byId.set(d.id, item);
    this._changed(ch, "update", true);
    return item;
  }

  /** Show the user's own message at once, before the server stores it. */
  addPending(channel, ref, text, author) {
    const ch = this.channel(channel);
    const item = makeItem({ key: `p:${ref}`, ref, channel, text, author, pending: true, ts: Date.now() });
    item.version++;
    ch.pending.set(ref, item);
    this._changed(ch, "append", true);
    return item;
  }

  /** The server stored a send under `id`. */
  ack(ref, id) {
    for (const ch of this.channels.values()) {
      const item = ch.pending.get(ref);
      if (!item) continue;
      ch.pending.delete(ref);
      if (!ch.byId.has(id)) {
        Object.assign(item, { id, pending: false, failed: null });
        item.version++;
        ch.byId.set(id, item);
      }
      // lastId moves only with frames from the log, so a resume never skips one.
      this._changed(ch, "update", true);
      return true;
    }
    return false;
  }

  /** A send the server refused: keep it visible, marked, so the text is not lost. */
  failPending(ref, reason) {
    for (const ch of this.channels.values()) {
      const item = ch.pending.get(ref);
      if (!item) continue;
      item.failed = reason || "Not sent";
      item.version++;
      this._changed(ch, "update", true);
      return item;
    }
    return null;
  }

  removePending(ref) {
    for (const ch of this.channels.values()) {
      if (ch.pending.delete(ref)) {
        this._changed(ch, "reset", true);
        return true;
      }
    }
    return false;
  }

  /**
   * Forget a channel's stored messages because the server cannot resume it; the
   * history that follows is merged in, so live messages arriving meanwhile stay.
   * Pending sends and replies still streaming are kept.
   */
  clearChannel(channel) {
    const ch = this.channel(channel);
    ch.byId.clear();
    ch.lastId = null;
    ch.more = null;
    ch.loaded = false;
    ch.loadingOlder = false;
    this._changed(ch, "reset", true);
  }

  /** A page of history (the latest one, or older ones from scrolling up), merged by id. */
  mergeHistory(channel, messages, more, { older = false } = {}) {
    const ch = this.channel(channel);
    let added = 0;
    for (const m of messages ?? []) {
      if (this.addMessage({ ...m, channel: m.channel ?? channel }, { emit: false })) added++;
    }
    // An older page answers "is there more before it"; the first page sets it too.
    if (older || ch.more === null) ch.more = Boolean(more);
    ch.loadingOlder = false;
    ch.loaded = true;
    this._changed(ch, older ? "prepend" : "reset", true);
    return added;
  }

  /** The oldest stored id of a channel, for history.before. */
  oldestId(channel) {
    const first = this.list(channel).find((it) => it.id && !it.pending);
    return first ? first.id : null;
  }

  /**
   * A `joined` or `presence` frame: a snapshot (`members`, no `joins`/`leaves`,
   * as v1 servers send too) or a diff. Returns false for a diff that came before
   * any snapshot (the list is unknown: ask for a page).
   */
  applyPresence(room, frame) {
    const ch = this.channel(`room:${room}`);
    const diff = Array.isArray(frame.joins) || Array.isArray(frame.leaves);
    if (!diff && !Array.isArray(frame.members)) return true;
    const known = ch.roster.loaded;
    let change = { reset: true };
    if (diff) change = ch.roster.apply(frame);
    else ch.roster.snapshot(frame);
    this._emit(ch.name, "presence", { change });
    return !diff || known;
  }

  /** A `members` page (or its failure, with `frame` null). */
  applyMembersPage(room, frame) {
    const ch = this.channels.get(`room:${room}`);
    if (!ch) return; // left meanwhile
    let change = { added: [], removed: [] };
    if (frame) change = ch.roster.page(frame);
    else ch.roster.loadingMore = false;
    this._emit(ch.name, "presence", { change });
  }

  /** A page of members was asked for: say so on screen. */
  membersRequested(room) {
    const ch = this.channel(`room:${room}`);
    ch.roster.loadingMore = true;
    this._emit(ch.name, "presence", { change: { added: [], removed: [] } });
  }

  _finish(ch, reply, id) {
    ch.finished.set(reply, id);
    if (ch.finished.size > MAX_FINISHED) ch.finished.delete(ch.finished.keys().next().value);
  }

  _changed(ch, kind, emit) {
    ch._sorted = null;
    if (emit) this._emit(ch.name, kind);
  }

  _emit(channel, kind, extra = {}) {
    this.dispatchEvent(new CustomEvent("change", { detail: { channel, kind, ...extra } }));
  }
}
