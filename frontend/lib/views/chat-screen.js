// The signed-in screen: sidebar, header, error banner, conversation and
// composer, drawn from one ChatClient. It knows which conversation is open and
// redraws what a store change touches (the message list at most once a frame).

import { h } from "../dom.js";
import { describeError, formatCount } from "../format.js";
import { ROOM_RE, splitChannel } from "../ids.js";
import { ComposerView } from "./composer.js";
import { HeaderView } from "./header.js";
import { MembersView } from "./members.js";
import { MessageListView } from "./message-list.js";
import { AnnouncerView, BannerView } from "./notices.js";
import { SidebarView } from "./sidebar.js";

const ANNOUNCE_MAX = 300; // characters of a message read out by screen readers
const THINKING_FOR = 120_000; // ms after a send that "thinking" may show

export class ChatScreen {
  /**
   * @param {{emit: (type: string, detail: object) => void, signOut: () => void,
   *   startRoom: () => string|null, me: () => {name: string, guest: boolean},
   *   moved: () => void}} host (moved: another conversation opened)
   * @param {import("../timers.js").Timers} timers cleared with the element
   */
  constructor(host, timers) {
    this.host = host;
    this.client = null;
    this.active = null; // the channel on screen
    this._restore = null; // the channel a reloaded tab had open
    this.limits = { max_text: 8000 };
    this._renderQueued = 0;
    this._renderKinds = new Set();
    this._lastErrorAt = 0;
    this._lastState = null;
    this.banner = new BannerView(timers);
    this.announcer = new AnnouncerView(timers);
    this._build();
  }

  _build() {
    this.members = new MembersView({ onMore: () => this._moreMembers() });
    this.sidebar = new SidebarView(
      {
        onOpen: (channel) => this.activate(channel),
        onLeave: (room) => this.leaveRoom(room),
        onJoin: (name) => this.joinRoom(name),
        onSignOut: () => this.host.signOut(),
        onClose: () => this.toggleDrawer(false),
      },
      this.members.el,
    );
    this.header = new HeaderView({ onMenu: () => this.toggleDrawer(), onReconnect: () => this.client?.conn.retry() });
    this.messages = new MessageListView({
      onRetry: (item) => this._retry(item),
      onDiscard: (item) => this.client?.discard(item),
      onScroll: () => this._maybeLoadOlder(),
    });
    this.composer = new ComposerView({ onSubmit: () => this._submit(), onStop: () => this.client?.stopReply(this.active) });
    const scrim = h("div", { class: "scrim", onclick: () => this.toggleDrawer(false) });
    const main = h("main", { class: "main" }, this.header.el, this.banner.el, this.messages.el, this.composer.el);
    this.el = h("div", { class: "chat", hidden: true }, this.sidebar.el, scrim, main);
  }

  /** Draw this client's chat from now on (a new session); `restore`: the channel to reopen. */
  attach(client, restore = null) {
    this.client = client;
    this.active = null;
    this._restore = restore;
    client.focus = restore;
    client.store.addEventListener("change", (ev) => client === this.client && this._onStoreChange(ev.detail));
    const on = (target, type, fn) => target.addEventListener(type, (ev) => client === this.client && fn(ev.detail));
    on(client, "welcome", (d) => this._onWelcome(d));
    on(client, "joined", (d) => this._onJoined(d));
    on(client, "left", (d) => this._onLeft(d));
    on(client, "new", (d) => this._noteNew(d.item));
    on(client, "reply-started", (d) => d.channel === this.active && this.announcer.say("The assistant is replying…"));
    on(client, "history-status", (d) => d.channel === this.active && this._renderStatus());
    on(client, "error", (d) => this._onErrorFrame(d.frame));
    on(client.conn, "state", (d) => this._onState(d));
    this.el.hidden = false;
    this.messages.reset();
    this.renderMe();
    this._renderRooms();
    this.setIndicator("connecting");
  }

  /** The session ended: stop drawing its client. */
  detach() {
    this.client = null;
    if (this._renderQueued) cancelAnimationFrame(this._renderQueued);
    this._renderQueued = 0;
  }

  // ---- actions ----------------------------------------------------------

  joinRoom(name) {
    const room = String(name || "").trim().toLowerCase().replace(/^#/, "");
    if (!ROOM_RE.test(room)) {
      this.banner.show({ title: "Room name not valid", message: "Use 1–64 of a–z, 0–9, _ and -." });
      return false;
    }
    if (this.client?.rooms.includes(room)) {
      this.activate(`room:${room}`);
      return true;
    }
    if (!this.client?.join(room)) {
      this.banner.show({ title: "Not connected", message: "Joining a room needs a connection; try again when it is back." });
      return false;
    }
    return true;
  }

  leaveRoom(name) {
    if (!this.client?.leave(name)) {
      this.banner.show({ title: "Not connected", message: "Leaving a room needs a connection; try again when it is back." });
    }
  }

  activate(channel, { focus = true } = {}) {
    const changed = channel !== this.active;
    this.active = channel;
    if (this.client) this.client.focus = channel;
    const store = this.client?.store;
    if (store?.has(channel)) store.channel(channel).unread = 0;
    if (changed) this.messages.reset();
    this.toggleDrawer(false);
    this._renderAll();
    // On touch screens focusing would pop the keyboard over the conversation.
    const touch = globalThis.matchMedia?.("(pointer: coarse)").matches;
    if (focus && !touch) this.composer.focus();
    if (changed) this.host.moved();
  }

  toggleDrawer(open) {
    const next = open ?? !this.el.classList.contains("drawer-open");
    this.el.classList.toggle("drawer-open", next);
    this.header.setDrawerOpen(next);
    if (next) this.sidebar.focusFirst();
  }

  _submit() {
    const text = this.composer.text;
    if (!text.trim() || !this.active || !this.client?.user) return;
    const max = this.limits.max_text ?? 8000;
    if (text.length > max) {
      this.banner.show({ title: "Message too long", message: `Messages can be up to ${max} characters; this one has ${text.length}.` });
      return;
    }
    this.messages.followNext();
    this.client.send(this.active, text);
    this.composer.clear();
  }

  _retry(item) {
    this.messages.followNext();
    this.client?.retry(item);
  }

  _moreMembers() {
    const { kind, name } = splitChannel(this.active ?? "");
    if (kind === "room" && this.client?.conn.isOpen) this.client.requestMembers(name);
  }

  _maybeLoadOlder() {
    const client = this.client;
    if (!client || !this.active || !client.conn.isOpen) return;
    const ch = client.store.channel(this.active);
    if (!ch.loaded || ch.loadingOlder || ch.more !== true) return;
    if (!this.messages.nearTop()) return;
    client.requestHistory(this.active, true);
  }

  // ---- what the client says ---------------------------------------------

  _onWelcome({ first, limits }) {
    this.limits = { ...this.limits, ...limits };
    const { rooms, dm } = this.client;
    const back = first && this._restore && this.client.isMine(this._restore) ? this._restore : null;
    this._restore = null;
    if (back) {
      this.activate(back, { focus: false });
    } else if (!this.active || (this.active.startsWith("room:") && !rooms.includes(this.active.slice(5)))) {
      this.activate(dm, { focus: false });
    } else {
      this._renderAll();
    }
    const wanted = this.host.startRoom();
    if (first && wanted && !back) {
      if (rooms.includes(wanted)) this.activate(`room:${wanted}`, { focus: false });
      else this.joinRoom(wanted);
    }
    if (first) this.host.emit("hub-chat:ready", { user: this.client.user });
    this.renderMe();
    this.banner.clearIf("Not connected");
  }

  _onJoined({ room, open }) {
    if (open) this.activate(`room:${room}`);
    this._renderRooms();
  }

  _onLeft({ room }) {
    if (this.active === `room:${room}`) this.activate(this.client.dm, { focus: false });
    this._renderRooms();
  }

  _onErrorFrame(f) {
    this._lastErrorAt = Date.now();
    if (f.code === "unauthorized") return; // close 4001 follows and handles it
    this.banner.show(describeError(f), f.retry_after);
    this._onStoreChange({ channel: this.active, kind: "update" }); // e.g. hide "thinking"
    this.host.emit("hub-chat:error", { code: f.code, message: f.message, ref: f.ref ?? null });
  }

  _noteNew(item) {
    const ch = this.client.store.channel(item.channel);
    const me = this.client.user;
    const fromMe = item.author?.id === me?.id && item.author?.role === "user";
    if (item.channel !== this.active && !fromMe && item.author?.role !== "system") {
      ch.unread += 1;
      this._renderRooms();
    }
    if (item.channel === this.active && !fromMe) {
      const who = item.author?.role === "assistant" ? "Assistant" : item.author?.name || "";
      this.announcer.say(`${who}: ${(item.text || "").slice(0, ANNOUNCE_MAX)}`);
    }
    const { channel, id, author, text, ts } = item;
    this.host.emit("hub-chat:message", { channel, id, author, text, ts });
  }

  _onState({ state }) {
    this.setIndicator(state);
    const shown = state === "idle" ? "offline" : state;
    if (shown !== this._lastState) this.host.emit("hub-chat:state", { state: shown });
    this._lastState = shown;
  }

  // ---- drawing ----------------------------------------------------------

  setIndicator(state) {
    this.header.setConnection(state, Boolean(this.client));
  }

  renderMe() {
    const { name, guest } = this.host.me();
    const user = this.client?.user;
    this.sidebar.renderMe({ id: user?.id, name: user?.name ?? name, guest });
  }

  _onStoreChange({ channel, kind, change }) {
    if (kind === "presence") {
      if (channel !== this.active) return;
      if (!change || change.reset) return this._renderPresence();
      this.members.apply(this.client.store.channel(channel).roster, change);
      return this._renderHeader();
    }
    if (channel !== this.active) return;
    this._renderKinds.add(kind);
    if (!this._renderQueued) {
      this._renderQueued = requestAnimationFrame(() => {
        this._renderQueued = 0;
        const kinds = new Set(this._renderKinds);
        this._renderKinds.clear();
        this._renderMessages(kinds);
      });
    }
  }

  _renderAll() {
    this._renderHeader();
    this._renderRooms();
    this._renderPresence();
    this._renderMessages(new Set(["reset"]));
  }

  _renderHeader() {
    const { kind, name } = splitChannel(this.active ?? "");
    const room = kind === "room" ? name : null;
    if (room) {
      const n = this.client?.store.channel(this.active).roster.online ?? 0;
      this.header.setTitle(`#${room}`, n ? `${formatCount(n)} online` : "Room");
    } else {
      this.header.setTitle("Assistant", "Private chat");
    }
    this.composer.setRoom(room);
  }

  _renderRooms() {
    const store = this.client?.store;
    if (!store) return;
    this.sidebar.renderChannels({
      dm: this.client.dm,
      rooms: this.client.rooms,
      active: this.active,
      unread: (channel) => (store.has(channel) ? store.channel(channel).unread : 0),
    });
  }

  _renderPresence() {
    const { kind, name } = splitChannel(this.active ?? "");
    if (kind !== "room" || !this.client) return this.members.hide();
    this.members.render(name, this.client.store.channel(this.active).roster, this.client.user?.id);
    this._renderHeader();
  }

  _renderMessages(kinds) {
    const store = this.client?.store;
    if (!store || !this.active) return;
    const items = store.list(this.active);
    const view = {
      channel: this.active,
      items,
      state: store.channel(this.active),
      me: this.client.user?.id ?? null,
      thinking: this._waiting(items),
    };
    this.messages.render(view, kinds, () => this._updateComposer());
    // A short page that does not fill the view: fetch older until it does (or none are left).
    this._maybeLoadOlder();
  }

  _renderStatus() {
    const store = this.client?.store;
    if (!store || !this.active) return;
    this.messages.renderStatus(store.channel(this.active), store.list(this.active).length);
  }

  /** In the private chat, between the user's message and the first piece of the reply. */
  _waiting(items) {
    const last = items.at(-1);
    return Boolean(
      this.active?.startsWith("dm:") &&
        last &&
        last.author?.role === "user" &&
        !last.failed &&
        !this.client.store.streamingIn(this.active) &&
        this.client.conn.isOpen &&
        (last.ts ?? 0) > this._lastErrorAt &&
        Date.now() - (last.ts ?? 0) < THINKING_FOR,
    );
  }

  _updateComposer() {
    const client = this.client;
    this.composer.update({ streaming: Boolean(client?.store.streamingIn(this.active)), canSend: Boolean(client?.user) });
  }
}
