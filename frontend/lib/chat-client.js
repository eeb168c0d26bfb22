// The chat without its screen: one Connection, one ChatStore, the user's rooms,
// and what each server frame does to them. The element listens and draws.
//
// Events (detail): "welcome" {first, limits}, "joined" {room, open} (open: this
// tab asked for it), "left" {room}, "new" {item} (a message not seen before),
// "reply-started" {channel}, "history-status" {channel}, "error" {frame}.
// The store says what changed in a channel; the connection says how it is.

import { Connection, wsUrlFor } from "./connection.js";
import { describeError } from "./format.js";
import { HistoryRequests } from "./history-requests.js";
import { newRef, splitChannel } from "./ids.js";
import { ChatStore } from "./store.js";

const HISTORY_PAGE = 50;
const MEMBERS_PAGE = 200; // the most the hub gives per members page

export class ChatClient extends EventTarget {
  /**
   * @param {{hub: string, token: () => string|null, user: object|null,
   *   resumeFrom?: Record<string, string>|null}} opts resumeFrom: last ids a reloaded tab saved
   */
  constructor({ hub, token, user, resumeFrom = null }) {
    super();
    this.store = new ChatStore();
    this.user = user?.id ? user : null;
    this.rooms = []; // names of rooms the user is in, in order
    this._history = new HistoryRequests(
      (frame) => this.conn.send(frame),
      ({ channel }) => this._notLoadingOlder(channel),
    );
    this._joinRefs = new Map(); // ref -> room (joins this tab asked for: open them)
    this._memberRefs = new Map(); // ref -> room of a members page on its way
    this._firstWelcome = true;
    // Until the first welcome, a reloaded tab resumes from where it was, with nothing on screen yet.
    this._restored = resumeFrom && Object.keys(resumeFrom).length ? resumeFrom : null;
    const resume = () => this._restored ?? this.store.resumePoints();
    this.conn = new Connection({ url: wsUrlFor(hub), token, resume });
    this.conn.addEventListener("frame", (ev) => this._onFrame(ev.detail.frame));
  }

  /** Has the hub welcomed this client yet (are its rooms known)? */
  get welcomed() {
    return !this._firstWelcome;
  }

  /** The channel on screen: its history is asked for first. */
  set focus(channel) {
    this._history.focus = channel;
  }

  get dm() {
    return this.user ? `dm:${this.user.id}` : null;
  }

  start() {
    this.conn.start();
  }

  stop() {
    this.conn.stop();
  }

  /** The user's dm or one of the user's rooms. */
  isMine(channel) {
    const { kind, name } = splitChannel(channel ?? "");
    return kind === "room" ? this.rooms.includes(name) : channel === this.dm;
  }

  /** Ask to join a valid room name; false when not connected. */
  join(room) {
    const ref = newRef();
    this._joinRefs.set(ref, room);
    if (this.conn.send({ type: "join", room, ref })) return true;
    this._joinRefs.delete(ref);
    return false;
  }

  leave(room) {
    return this.conn.send({ type: "leave", room, ref: newRef() });
  }

  /** The latest page of a channel, or (older) the page before the oldest one held. */
  requestHistory(channel, older) {
    const frame = { type: "history", channel, limit: HISTORY_PAGE };
    if (older) {
      const before = this.store.oldestId(channel);
      if (!before) return;
      frame.before = before;
      this.store.channel(channel).loadingOlder = true;
    }
    this._history.add(frame, { channel, older });
    this._emit("history-status", { channel });
  }

  /** The next page of who is online in a room (the first one when none is held). */
  requestMembers(room) {
    const roster = this.store.channel(`room:${room}`).roster;
    if (roster.loadingMore) return;
    const frame = { type: "members", room, limit: MEMBERS_PAGE, ref: newRef() };
    const after = roster.loaded ? roster.lastId() : null;
    if (after) frame.after = after;
    if (!this.conn.send(frame)) return;
    this._memberRefs.set(frame.ref, room);
    this.store.membersRequested(room);
  }

  /** Show the user's text at once and send it; kept until acked. */
  send(channel, text) {
    const ref = newRef();
    this.store.addPending(channel, ref, text, { id: this.user.id, name: this.user.name, role: "user" });
    if (!this.conn.sendMessage(channel, text, ref)) {
      this.store.failPending(ref, "Too many messages are waiting to be sent.");
    }
  }

  retry(item) {
    this.discard(item);
    this.send(item.channel, item.text);
  }

  discard(item) {
    this.conn.settle(item.ref);
    this.store.removePending(item.ref);
  }

  /** Stop the reply streaming in a channel, if any. */
  stopReply(channel) {
    const streaming = this.store.streamingIn(channel);
    if (streaming) this.conn.send({ type: "stop", reply: streaming.reply, ref: newRef() });
  }

  // ---- frames -----------------------------------------------------------

  _onFrame(f) {
    switch (f.type) {
      case "welcome":
        return this._onWelcome(f);
      case "message":
        return this._noteNew(this.store.addMessage(f));
      case "delta": {
        const fresh = !this.store.channel(f.channel).streams.has(f.reply);
        if (this.store.applyDelta(f) && fresh) this._emit("reply-started", { channel: f.channel });
        return;
      }
      case "done":
        return this._noteNew(this.store.applyDone(f));
      case "ack":
        this.store.ack(f.ref, f.id);
        return;
      case "history":
        return this._onHistory(f);
      case "joined":
        return this._onJoined(f);
      case "left":
        return this._onLeft(f.room);
      case "presence":
        // A diff before any snapshot (the list is unknown here): ask for the first page.
        if (!this.store.applyPresence(f.room, f)) this.requestMembers(f.room);
        return;
      case "members":
        return this._onMembers(f);
      case "error":
        return this._onError(f);
      default:
        return; // frames from a newer server: ignored
    }
  }

  _noteNew(item) {
    if (item) this._emit("new", { item });
  }

  _onWelcome(f) {
    this.user = f.user ?? this.user;
    const dm = this.dm;
    const channels = Array.isArray(f.channels) ? f.channels : [dm];
    const resumed = f.resumed ?? {};
    const rooms = channels.filter((c) => c.startsWith("room:")).map((c) => c.slice(5));
    // Rooms left from another tab while this one was away.
    for (const name of this.rooms) if (!rooms.includes(name)) this.store.drop(`room:${name}`);
    this.rooms = rooms;
    this._history.dropAll();
    for (const room of this._memberRefs.values()) this.store.applyMembersPage(room, null);
    this._memberRefs.clear();
    // A reloaded tab has no messages yet: it loads history even where the missed ones are replayed.
    const restored = this._restored !== null;
    this._restored = null;
    const focus = this._history.focus; // (its page goes first)
    const all = [...new Set([dm, ...channels])].sort((a, b) => (b === focus) - (a === focus));
    for (const ch of all) {
      if (resumed[ch] === true && !restored) continue; // every missed message is being replayed
      if (resumed[ch] !== true) this.store.clearChannel(ch);
      this.requestHistory(ch, false);
    }
    const first = this._firstWelcome;
    this._firstWelcome = false;
    this._emit("welcome", { first, limits: f.limits ?? {} });
  }

  _onHistory(f) {
    const req = (f.ref && this._history.settle(f.ref)) || { channel: f.channel, older: false };
    const channel = f.channel ?? req.channel;
    if (!this.isMine(channel)) return; // a room left meanwhile
    this.store.mergeHistory(channel, f.messages, f.more, { older: req.older });
  }

  _onJoined(f) {
    const room = f.room;
    if (!this.rooms.includes(room)) this.rooms = [...this.rooms, room];
    const channel = `room:${room}`;
    this.store.applyPresence(room, f);
    this.store.mergeHistory(channel, f.history ?? [], (f.history ?? []).length > 0);
    const mine = f.ref && this._joinRefs.has(f.ref);
    if (mine) this._joinRefs.delete(f.ref);
    const open = mine || [...this._joinRefs.values()].includes(room);
    if (open) for (const [ref, r] of this._joinRefs) if (r === room) this._joinRefs.delete(ref);
    this._emit("joined", { room, open });
  }

  _onMembers(f) {
    const room = (f.ref && this._memberRefs.get(f.ref)) || f.room;
    if (f.ref) this._memberRefs.delete(f.ref);
    this.store.applyMembersPage(room, f);
  }

  _notLoadingOlder(channel) {
    if (this.store.has(channel)) this.store.channel(channel).loadingOlder = false;
  }

  _onLeft(room) {
    this.rooms = this.rooms.filter((r) => r !== room);
    this.store.drop(`room:${room}`);
    this._emit("left", { room });
  }

  _onError(f) {
    if (f.code !== "unauthorized") {
      // (unauthorized: close 4001 follows and the element handles it)
      const req = f.ref && this._history.settle(f.ref);
      if (req) this._notLoadingOlder(req.channel);
      if (f.ref) this._joinRefs.delete(f.ref);
      const membersOf = f.ref && this._memberRefs.get(f.ref);
      if (membersOf) {
        this._memberRefs.delete(f.ref);
        this.store.applyMembersPage(membersOf, null);
      }
      if (f.ref) {
        const text = describeError(f);
        this.store.failPending(f.ref, `${text.title}. ${text.message}`.trim());
      }
    }
    this._emit("error", { frame: f });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
