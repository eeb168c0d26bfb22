// <hub-chat>: the chat hub's web client as one custom element.
//
//   <script type="module" src="https://hub.example.com/hub-chat.js"></script>
//   <hub-chat hub="https://hub.example.com" token="…"></hub-chat>
//
// Attributes: hub (base URL; default this page's origin), token (a JWT from the
// host app; without it, guest sign-in where the hub allows it), room (a room to
// open at start), theme (light | dark | auto, default auto), autofocus (take
// focus at start: for a full-window chat, not for an embed).
// Events (bubbling, composed): hub-chat:state, hub-chat:ready, hub-chat:message,
// hub-chat:error, hub-chat:token-expired, hub-chat:signed-out.

import { guestLogin, loadGuest, loadName, LoginError, peekToken, saveGuest, saveName } from "./lib/auth.js";
import { Connection, wsUrlFor } from "./lib/connection.js";
import { h, icon, ICONS } from "./lib/dom.js";
import { describeError, initials, hueFor, STATE_LABELS } from "./lib/format.js";
import { newRef, ROOM_RE, splitChannel } from "./lib/ids.js";
import { continues, createMessageNode, updateMessageNode } from "./lib/message-view.js";
import { ChatStore } from "./lib/store.js";
import { Timers } from "./lib/timers.js";

const CSS_URL = new URL("./hub-chat.css", import.meta.url).href;
const HISTORY_PAGE = 50;
const NEAR_TOP = 160; // px from the top that loads older messages
const NEAR_BOTTOM = 96; // px from the bottom that counts as "following the conversation"
const ANNOUNCE_MAX = 300; // characters of a message read out by screen readers

export class HubChat extends HTMLElement {
  static observedAttributes = ["hub", "token", "room", "theme"];

  constructor() {
    super();
    this.attachShadow({ mode: "open" });
    this._built = false;
    this._tokenProp = null;
    this._session = null; // {token, user, mode: "host"|"guest"}
    this.conn = null;
    this.store = null;
    this.user = null;
    this.rooms = []; // names of rooms the user is in, in order
    this.active = null; // the channel on screen
    this._historyRefs = new Map(); // ref -> {channel, older}
    this._joinRefs = new Map(); // ref -> room (joins this tab asked for: open them)
    this._nodes = new Map(); // key -> <li> of the channel on screen
    this._renderQueued = 0;
    this._renderKinds = new Set();
    this._timers = new Timers();
    this._loginAbort = null;
    this._limits = { max_text: 8000 };
    this._reloginAt = 0;
    this._lastErrorAt = 0;
  }

  // ---- public API -------------------------------------------------------

  /** The token for the hub; setting it (re)connects. Prefer this to the attribute. */
  get token() {
    return this._tokenProp ?? this.getAttribute("token");
  }

  set token(value) {
    this._tokenProp = value || null;
    if (this.isConnected && this._built) this._boot();
  }

  get hub() {
    const attr = this.getAttribute("hub");
    return (attr && attr.trim()) || globalThis.location.origin;
  }

  /** A snapshot for debugging and tests. */
  get state() {
    return {
      connection: this.conn?.state ?? "idle",
      worker: this.conn?.worker ?? null,
      user: this.user,
      channel: this.active,
      rooms: [...this.rooms],
      unacked: this.conn ? this.conn.unacked.size : 0,
      lastIds: this.store ? this.store.resumePoints() : {},
    };
  }

  /** Open a channel ("dm:…" or "room:…") or join a room by name. */
  open(target) {
    if (!target) return;
    if (target.startsWith("dm:") || target.startsWith("room:")) {
      const { kind, name } = splitChannel(target);
      if (kind === "room" && !this.rooms.includes(name)) return this.joinRoom(name);
      return this._activate(target);
    }
    return this.joinRoom(target);
  }

  joinRoom(name) {
    const room = String(name || "").trim().toLowerCase().replace(/^#/, "");
    if (!ROOM_RE.test(room)) {
      this._showError({ title: "Room name not valid", message: "Use 1–64 of a–z, 0–9, _ and -." });
      return false;
    }
    if (this.rooms.includes(room)) {
      this._activate(`room:${room}`);
      return true;
    }
    const ref = newRef();
    this._joinRefs.set(ref, room);
    if (!this.conn?.send({ type: "join", room, ref })) {
      this._joinRefs.delete(ref);
      this._showError({ title: "Not connected", message: "Joining a room needs a connection; try again when it is back." });
      return false;
    }
    return true;
  }

  leaveRoom(name) {
    if (!this.conn?.send({ type: "leave", room: name, ref: newRef() })) {
      this._showError({ title: "Not connected", message: "Leaving a room needs a connection; try again when it is back." });
    }
  }

  signOut() {
    this._endSession();
    if (this._session?.mode === "guest") saveGuest(this.hub, null);
    this._session = null;
    this._emit("hub-chat:signed-out", {});
    this._showSignIn("", { byUser: true });
  }

  // ---- lifecycle --------------------------------------------------------

  connectedCallback() {
    // A host may set .token before this module loaded: that value sits on the
    // instance and hides the accessor; move it through the setter.
    if (Object.prototype.hasOwnProperty.call(this, "token")) {
      const value = this.token;
      delete this.token;
      this._tokenProp = value || null;
    }
    if (!this._built) this._build();
    this._boot();
  }

  disconnectedCallback() {
    this._endSession();
    this._loginAbort?.abort();
    this._loginAbort = null;
    this._timers.clear();
  }

  attributeChangedCallback(name, oldValue, value) {
    if (!this._built || oldValue === value) return;
    if (name === "hub" || (name === "token" && this._tokenProp == null)) this._boot();
    if (name === "room" && value && this.conn?.isOpen) this.joinRoom(value);
  }

  // ---- sessions ---------------------------------------------------------

  _boot() {
    this._endSession();
    const hostToken = this.token;
    if (hostToken) {
      this._session = { token: hostToken, user: peekToken(hostToken), mode: "host" };
    } else {
      const guest = loadGuest(this.hub);
      this._session = guest ? { ...guest, mode: "guest" } : null;
    }
    if (this._session) this._startSession();
    else this._showSignIn();
  }

  _startSession() {
    this.store = new ChatStore();
    this.rooms = [];
    this.user = this._session.user?.id ? this._session.user : null;
    this.active = null;
    this._historyRefs.clear();
    this._joinRefs.clear();
    this._firstWelcome = true;
    this.store.addEventListener("change", (ev) => this._onStoreChange(ev.detail));
    this.conn = new Connection({
      url: wsUrlFor(this.hub),
      token: () => this._session?.token ?? null,
      resume: () => this.store.resumePoints(),
    });
    this.conn.addEventListener("state", (ev) => this._onState(ev.detail));
    this.conn.addEventListener("frame", (ev) => this._onFrame(ev.detail.frame));
    this.conn.addEventListener("unauthorized", () => this._onUnauthorized());
    this.conn.addEventListener("fatal", (ev) => this._onFatal(ev.detail));
    this._showChat();
    this.conn.start();
  }

  _endSession() {
    if (this.conn) this.conn.stop();
    this.conn = null;
    if (this._renderQueued) cancelAnimationFrame(this._renderQueued);
    this._renderQueued = 0;
  }

  async _signIn(name) {
    const $ = this._el;
    const clean = name.trim().replace(/\s+/g, " ");
    if (!clean) {
      $.signinError.textContent = "Enter a name to continue.";
      $.signinName.focus();
      return;
    }
    $.signinError.textContent = "";
    $.signinSubmit.disabled = true;
    $.signinSubmit.textContent = "Signing in…";
    this._loginAbort?.abort();
    this._loginAbort = new AbortController();
    try {
      const session = await guestLogin(this.hub, clean.slice(0, 64), { signal: this._loginAbort.signal });
      saveName(this.hub, clean);
      saveGuest(this.hub, session);
      this._session = { ...session, mode: "guest" };
      this._startSession();
    } catch (err) {
      if (err?.name === "AbortError") return;
      $.signinError.textContent = err instanceof LoginError ? err.message : "Sign-in failed. Try again.";
      $.signinName.focus();
    } finally {
      $.signinSubmit.disabled = false;
      $.signinSubmit.textContent = "Start chatting";
    }
  }

  /** Close 4001 or an unauthorized error: a guest signs in again, a host is asked for a token. */
  async _onUnauthorized() {
    if (this._reauthing) return;
    this._reauthing = true;
    try {
      await this._reauth();
    } finally {
      this._reauthing = false;
    }
  }

  async _reauth() {
    this._endSession();
    if (this._session?.mode === "guest") {
      saveGuest(this.hub, null);
      const name = loadName(this.hub) || this._session.user?.name;
      // Once a minute at most, so a hub that rejects every token does not loop.
      if (name && Date.now() - this._reloginAt > 60_000) {
        this._reloginAt = Date.now();
        try {
          const session = await guestLogin(this.hub, name);
          saveGuest(this.hub, session);
          this._session = { ...session, mode: "guest" };
          this._startSession();
          return;
        } catch {
          /* fall through to the form */
        }
      }
      this._session = null;
      this._showSignIn("Your session ended. Sign in again to continue.", { byUser: true });
      return;
    }
    this._setIndicator("offline");
    this._showError({ title: "Signed out", message: "Your access to the chat expired. Reload the page to sign in again." });
    this._emit("hub-chat:token-expired", {});
  }

  _onFatal({ code }) {
    const message =
      code === 1009
        ? "A message was too large for the hub. Shorten it and reconnect."
        : "The hub closed the connection. Select Reconnect to continue.";
    this._showError({ title: "Disconnected", message });
  }

  // ---- frames -----------------------------------------------------------

  _onFrame(f) {
    switch (f.type) {
      case "welcome":
        return this._onWelcome(f);
      case "message": {
        const item = this.store.addMessage(f);
        if (item) this._noteNew(item);
        return;
      }
      case "delta": {
        const fresh = !this.store.channel(f.channel).streams.has(f.reply);
        if (this.store.applyDelta(f) && fresh && f.channel === this.active) this._announce("The assistant is replying…");
        return;
      }
      case "done": {
        const item = this.store.applyDone(f);
        if (item) this._noteNew(item);
        return;
      }
      case "ack":
        this.store.ack(f.ref, f.id);
        return;
      case "history": {
        const req = (f.ref && this._historyRefs.get(f.ref)) || { channel: f.channel, older: false };
        if (f.ref) this._historyRefs.delete(f.ref);
        const channel = f.channel ?? req.channel;
        if (!this._isMine(channel)) return; // a room left meanwhile
        this._pendingPrepend = req.older;
        this.store.mergeHistory(channel, f.messages, f.more, { older: req.older });
        return;
      }
      case "joined":
        return this._onJoined(f);
      case "left":
        return this._onLeft(f.room);
      case "presence":
        this.store.setMembers(f.room, f.members);
        return;
      case "error":
        return this._onErrorFrame(f);
      default:
        return; // frames from a newer server: ignored
    }
  }

  /** The user's dm or one of the user's rooms. */
  _isMine(channel) {
    const { kind, name } = splitChannel(channel ?? "");
    return kind === "room" ? this.rooms.includes(name) : channel === `dm:${this.user?.id}`;
  }

  _onWelcome(f) {
    this.user = f.user ?? this.user;
    this._limits = { ...this._limits, ...(f.limits ?? {}) };
    const dm = `dm:${this.user.id}`;
    const channels = Array.isArray(f.channels) ? f.channels : [dm];
    const resumed = f.resumed ?? {};
    const rooms = channels.filter((c) => c.startsWith("room:")).map((c) => c.slice(5));
    // Rooms left from another tab while this one was away.
    for (const name of this.rooms) if (!rooms.includes(name)) this.store.drop(`room:${name}`);
    this.rooms = rooms;
    this._historyRefs.clear();
    for (const ch of new Set([dm, ...channels])) {
      if (resumed[ch] === true) continue; // every missed message is being replayed
      this.store.clearChannel(ch);
      this._requestHistory(ch, false);
    }
    if (!this.active || (this.active.startsWith("room:") && !rooms.includes(this.active.slice(5)))) {
      this._activate(dm, { focus: false });
    } else {
      this._renderAll();
    }
    const wanted = this.getAttribute("room");
    if (this._firstWelcome && wanted) {
      if (rooms.includes(wanted)) this._activate(`room:${wanted}`, { focus: false });
      else this.joinRoom(wanted);
    }
    if (this._firstWelcome) this._emit("hub-chat:ready", { user: this.user });
    this._firstWelcome = false;
    this._renderMe();
    this._clearErrorIf("Not connected");
  }

  _onJoined(f) {
    const room = f.room;
    if (!this.rooms.includes(room)) this.rooms = [...this.rooms, room];
    const channel = `room:${room}`;
    this.store.setMembers(room, f.members);
    this.store.mergeHistory(channel, f.history ?? [], (f.history ?? []).length > 0);
    const mine = f.ref && this._joinRefs.has(f.ref);
    if (mine) this._joinRefs.delete(f.ref);
    const askedHere = mine || [...this._joinRefs.values()].includes(room);
    if (askedHere) {
      for (const [ref, r] of this._joinRefs) if (r === room) this._joinRefs.delete(ref);
      this._activate(channel);
    }
    this._renderRooms();
  }

  _onLeft(room) {
    this.rooms = this.rooms.filter((r) => r !== room);
    this.store.drop(`room:${room}`);
    if (this.active === `room:${room}`) this._activate(`dm:${this.user.id}`, { focus: false });
    this._renderRooms();
  }

  _onErrorFrame(f) {
    const text = describeError(f);
    this._lastErrorAt = Date.now();
    if (f.code === "unauthorized") return; // close 4001 follows and handles it
    if (f.ref && this._historyRefs.has(f.ref)) {
      const { channel } = this._historyRefs.get(f.ref);
      this._historyRefs.delete(f.ref);
      if (this.store.has(channel)) this.store.channel(channel).loadingOlder = false;
    }
    if (f.ref && this._joinRefs.has(f.ref)) this._joinRefs.delete(f.ref);
    if (f.ref) this.store.failPending(f.ref, `${text.title}. ${text.message}`.trim());
    this._showError(text, f.retry_after);
    this._onStoreChange({ channel: this.active, kind: "update" }); // e.g. hide "thinking"
    this._emit("hub-chat:error", { code: f.code, message: f.message, ref: f.ref ?? null });
  }

  _noteNew(item) {
    const ch = this.store.channel(item.channel);
    const fromMe = item.author?.id === this.user?.id && item.author?.role === "user";
    if (item.channel !== this.active && !fromMe && item.author?.role !== "system") {
      ch.unread += 1;
      this._renderRooms();
    }
    if (item.channel === this.active && !fromMe) {
      const who = item.author?.role === "assistant" ? "Assistant" : item.author?.name || "";
      this._announce(`${who}: ${(item.text || "").slice(0, ANNOUNCE_MAX)}`);
    }
    this._emit("hub-chat:message", {
      channel: item.channel,
      id: item.id,
      author: item.author,
      text: item.text,
      ts: item.ts,
    });
  }

  _requestHistory(channel, older) {
    const ch = this.store.channel(channel);
    const frame = { type: "history", channel, limit: HISTORY_PAGE, ref: newRef() };
    if (older) {
      const before = this.store.oldestId(channel);
      if (!before) return;
      frame.before = before;
      ch.loadingOlder = true;
    }
    this._historyRefs.set(frame.ref, { channel, older });
    if (!this.conn?.send(frame)) {
      this._historyRefs.delete(frame.ref);
      ch.loadingOlder = false;
    }
    this._renderOlderMarker();
  }

  // ---- sending ----------------------------------------------------------

  _submit() {
    const $ = this._el;
    const text = $.composer.value.replace(/\s+$/, "");
    if (!text.trim() || !this.active || !this.user) return;
    if (text.length > (this._limits.max_text ?? 8000)) {
      this._showError({
        title: "Message too long",
        message: `Messages can be up to ${this._limits.max_text} characters; this one has ${text.length}.`,
      });
      return;
    }
    this._send(this.active, text);
    $.composer.value = "";
    this._autosize();
    this._updateComposer();
  }

  _send(channel, text) {
    const ref = newRef();
    this.store.addPending(channel, ref, text, { id: this.user.id, name: this.user.name, role: "user" });
    this._forceBottom = true;
    if (!this.conn.sendMessage(channel, text, ref)) {
      this.store.failPending(ref, "Too many messages are waiting to be sent.");
    }
  }

  _retry(item) {
    this.conn?.settle(item.ref);
    this.store.removePending(item.ref);
    this._send(item.channel, item.text);
  }

  _discard(item) {
    this.conn?.settle(item.ref);
    this.store.removePending(item.ref);
  }

  _stop() {
    const streaming = this.store?.streamingIn(this.active);
    if (streaming) this.conn?.send({ type: "stop", reply: streaming.reply, ref: newRef() });
  }

  // ---- view: building ---------------------------------------------------

  _build() {
    this._built = true;
    const root = this.shadowRoot;
    const link = h("link", { rel: "stylesheet", href: CSS_URL });
    const app = h("div", { class: "app", part: "app", style: "visibility:hidden" });
    // Shown once styled; focus waits for it too (a hidden field cannot take focus).
    this._styled = new Promise((resolve) => {
      const reveal = () => {
        app.style.removeProperty("visibility");
        resolve();
      };
      link.addEventListener("load", reveal, { once: true });
      link.addEventListener("error", reveal, { once: true });
    });
    const $ = (this._el = {});

    // Sign-in
    $.signinName = h("input", {
      id: "signin-name",
      "data-testid": "signin-name",
      type: "text",
      name: "name",
      maxlength: "64",
      autocomplete: "nickname",
      required: true,
      placeholder: "e.g. Ada",
    });
    $.signinSubmit = h("button", { type: "submit", class: "primary", "data-testid": "signin-submit" }, "Start chatting");
    $.signinError = h("p", { class: "form-error", role: "alert", "data-testid": "signin-error" });
    $.signinNote = h("p", { class: "muted small" });
    $.signin = h(
      "section",
      { class: "signin", hidden: true, "aria-labelledby": "signin-title" },
      h(
        "form",
        {
          class: "card",
          "data-testid": "signin-form",
          onsubmit: (e) => {
            e.preventDefault();
            this._signIn($.signinName.value);
          },
        },
        h("div", { class: "logo", "aria-hidden": "true" }, icon(ICONS.spark, { size: 28 })),
        h("h1", { id: "signin-title" }, "Welcome to the chat"),
        h("p", { class: "muted" }, "Talk with the assistant in private, or join a room with others."),
        $.signinNote,
        h("label", { for: "signin-name" }, "Your name"),
        $.signinName,
        $.signinSubmit,
        $.signinError,
      ),
    );

    // Sidebar
    $.roomList = h("ul", { class: "channels", "data-testid": "room-list", "aria-label": "Conversations" });
    $.roomInput = h("input", {
      id: "room-input",
      "data-testid": "room-input",
      type: "text",
      maxlength: "64",
      autocomplete: "off",
      autocapitalize: "off",
      spellcheck: false,
      placeholder: "room-name",
      pattern: "[a-z0-9_\\-]{1,64}",
      "aria-describedby": "room-help",
    });
    $.roomForm = h(
      "form",
      {
        class: "join",
        "data-testid": "room-form",
        onsubmit: (e) => {
          e.preventDefault();
          const name = $.roomInput.value.trim().toLowerCase().replace(/^#/, "");
          if (this.joinRoom(name)) $.roomInput.value = "";
        },
      },
      h("label", { for: "room-input" }, "Join or create a room"),
      h(
        "div",
        { class: "join-row" },
        $.roomInput,
        h("button", { type: "submit", class: "secondary", "data-testid": "room-join" }, "Join"),
      ),
      h("p", { id: "room-help", class: "muted small" }, "Lowercase letters, digits, _ and -"),
    );
    $.presenceTitle = h("h2", { class: "section-title", id: "presence-title" }, "Online");
    $.presenceList = h("ul", { class: "members", "data-testid": "presence-list", "aria-labelledby": "presence-title" });
    $.presence = h("section", { class: "presence", "data-testid": "presence", hidden: true }, $.presenceTitle, $.presenceList);
    $.meName = h("span", { class: "me-name", "data-testid": "me-name" });
    $.meAvatar = h("span", { class: "avatar small", "aria-hidden": "true" });
    $.signout = h(
      "button",
      { type: "button", class: "icon-btn", "data-testid": "signout", "aria-label": "Sign out", title: "Sign out", onclick: () => this.signOut() },
      icon(ICONS.logout, { size: 18 }),
    );
    $.sidebar = h(
      "aside",
      { class: "sidebar", id: "sidebar", "aria-label": "Conversations and rooms" },
      h(
        "div",
        { class: "brand" },
        h("span", { class: "logo small", "aria-hidden": "true" }, icon(ICONS.spark, { size: 16 })),
        h("span", {}, "Chat hub"),
        h(
          "button",
          { type: "button", class: "icon-btn drawer-close", "aria-label": "Close menu", onclick: () => this._toggleDrawer(false) },
          icon(ICONS.close, { size: 18 }),
        ),
      ),
      h("nav", { class: "nav", "aria-label": "Channels" }, $.roomList),
      $.roomForm,
      $.presence,
      h("div", { class: "me" }, $.meAvatar, $.meName, $.signout),
    );
    $.scrim = h("div", { class: "scrim", onclick: () => this._toggleDrawer(false) });

    // Main column
    $.menu = h(
      "button",
      {
        type: "button",
        class: "icon-btn menu",
        "data-testid": "menu-toggle",
        "aria-label": "Open menu",
        "aria-controls": "sidebar",
        "aria-expanded": "false",
        onclick: () => this._toggleDrawer(),
      },
      icon(ICONS.menu),
    );
    $.title = h("h1", { class: "title", "data-testid": "channel-title" });
    $.subtitle = h("p", { class: "subtitle" });
    $.stateLabel = h("span", { class: "conn-label" });
    $.conn = h(
      "div",
      { class: "conn", "data-testid": "connection-state", "data-state": "connecting", role: "status" },
      h("span", { class: "dot", "aria-hidden": "true" }),
      $.stateLabel,
    );
    $.reconnect = h(
      "button",
      { type: "button", class: "link", "data-testid": "reconnect", hidden: true, onclick: () => this.conn?.retry() },
      "Retry now",
    );
    $.header = h(
      "header",
      { class: "topbar" },
      $.menu,
      h("div", { class: "heading" }, $.title, $.subtitle),
      h("div", { class: "conn-wrap" }, $.conn, $.reconnect),
    );
    $.bannerTitle = h("strong", {});
    $.bannerText = h("span", {});
    $.banner = h(
      "div",
      { class: "banner", "data-testid": "error-banner", role: "alert", hidden: true },
      h("div", { class: "banner-text" }, $.bannerTitle, " ", $.bannerText),
      h(
        "button",
        { type: "button", class: "icon-btn", "data-testid": "error-dismiss", "aria-label": "Dismiss message", onclick: () => this._hideError() },
        icon(ICONS.close, { size: 16 }),
      ),
    );
    $.older = h("div", { class: "older", "data-testid": "history-status" });
    $.list = h("ol", { class: "messages" });
    $.empty = h("div", { class: "empty", hidden: true });
    $.thinking = h(
      "div",
      { class: "thinking", "data-testid": "thinking", hidden: true },
      h("div", { class: "avatar", "aria-hidden": "true" }, icon(ICONS.spark, { size: 18 })),
      h("div", { class: "dots", role: "img", "aria-label": "The assistant is thinking" }, h("span"), h("span"), h("span")),
    );
    $.scroller = h(
      "div",
      {
        class: "scroller",
        "data-testid": "message-list",
        role: "log",
        "aria-live": "polite",
        "aria-relevant": "additions",
        "aria-label": "Messages",
        tabindex: "0",
        onscroll: () => this._onScroll(),
      },
      h("div", { class: "thread" }, $.older, $.empty, $.list, $.thinking),
    );
    $.jump = h(
      "button",
      { type: "button", class: "jump", hidden: true, "aria-label": "Jump to latest messages", onclick: () => this._scrollToBottom(true) },
      icon(ICONS.down, { size: 18 }),
    );
    $.composer = h("textarea", {
      id: "composer",
      "data-testid": "composer",
      rows: "1",
      placeholder: "Message the assistant",
      "aria-describedby": "composer-hint",
      enterkeyhint: "send",
      oninput: () => {
        this._autosize();
        this._updateComposer();
      },
      onkeydown: (e) => {
        if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
          e.preventDefault();
          this._submit();
        }
      },
    });
    $.send = h(
      "button",
      { type: "submit", class: "send", "data-testid": "send", "aria-label": "Send message", title: "Send (Enter)", disabled: true },
      icon(ICONS.send, { size: 18 }),
    );
    $.stop = h(
      "button",
      { type: "button", class: "stop", "data-testid": "stop", "aria-label": "Stop the reply", title: "Stop", hidden: true, onclick: () => this._stop() },
      icon(ICONS.stop, { size: 16 }),
    );
    $.hint = h("p", { class: "hint", id: "composer-hint" });
    $.composerForm = h(
      "form",
      {
        class: "composer",
        "data-testid": "composer-form",
        onsubmit: (e) => {
          e.preventDefault();
          this._submit();
        },
      },
      h(
        "div",
        { class: "box" },
        h("label", { for: "composer", class: "sr-only" }, "Message"),
        $.composer,
        h("div", { class: "actions" }, $.stop, $.send),
      ),
      $.hint,
    );
    $.main = h("main", { class: "main" }, $.header, $.banner, h("div", { class: "stage" }, $.scroller, $.jump), $.composerForm);
    $.chat = h("div", { class: "chat", hidden: true }, $.sidebar, $.scrim, $.main);
    $.announcer = h("div", { class: "sr-only", "aria-live": "polite", "data-testid": "announcer" });
    app.append($.signin, $.chat, $.announcer);
    root.append(link, app);

    this._onKeyDown = (e) => {
      if (e.key === "Escape" && $.chat.classList.contains("drawer-open")) this._toggleDrawer(false);
    };
    root.addEventListener("keydown", this._onKeyDown);
  }

  // ---- view: screens ----------------------------------------------------

  /** `byUser`: the person got here by an action (sign out, session ended), so focus follows. */
  _showSignIn(note = "", { byUser = false } = {}) {
    const $ = this._el;
    $.chat.hidden = true;
    $.signin.hidden = false;
    $.signinNote.textContent = note;
    $.signinError.textContent = "";
    if (!$.signinName.value) $.signinName.value = loadName(this.hub);
    this._setIndicator("offline");
    // An embed takes focus only when asked to (autofocus), never on its own at page load.
    if (byUser || this.hasAttribute("autofocus")) {
      this._styled.then(() => {
        if (!$.signin.hidden) $.signinName.focus({ preventScroll: true });
      });
    }
  }

  _showChat() {
    const $ = this._el;
    $.signin.hidden = true;
    $.chat.hidden = false;
    $.list.replaceChildren();
    this._nodes.clear();
    this._renderMe();
    this._renderRooms();
    this._setIndicator("connecting");
  }

  _activate(channel, { focus = true } = {}) {
    const changed = channel !== this.active;
    this.active = channel;
    if (this.store?.has(channel)) this.store.channel(channel).unread = 0;
    if (changed) {
      this._el.list.replaceChildren();
      this._nodes.clear();
      this._forceBottom = true;
    }
    this._toggleDrawer(false);
    this._renderAll();
    // On touch screens focusing would pop the keyboard over the conversation.
    const touch = globalThis.matchMedia?.("(pointer: coarse)").matches;
    if (focus && !touch) this._el.composer.focus({ preventScroll: true });
  }

  _toggleDrawer(open) {
    const $ = this._el;
    const next = open ?? !$.chat.classList.contains("drawer-open");
    $.chat.classList.toggle("drawer-open", next);
    $.menu.setAttribute("aria-expanded", String(next));
    if (next) $.sidebar.querySelector("button, input")?.focus({ preventScroll: true });
  }

  // ---- view: rendering --------------------------------------------------

  _onStoreChange({ channel, kind }) {
    if (kind === "presence") {
      if (channel === this.active) this._renderPresence();
      return;
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
    const $ = this._el;
    const { kind, name } = splitChannel(this.active ?? "");
    if (kind === "room") {
      $.title.textContent = `#${name}`;
      const n = this.store?.channel(this.active).members.length ?? 0;
      $.subtitle.textContent = n ? `${n} online` : "Room";
      $.composer.placeholder = `Message #${name}`;
      $.hint.textContent = "Enter to send · Shift+Enter for a new line · Mention @assistant to ask the assistant";
    } else {
      $.title.textContent = "Assistant";
      $.subtitle.textContent = "Private chat";
      $.composer.placeholder = "Message the assistant";
      $.hint.textContent = "Enter to send · Shift+Enter for a new line";
    }
  }

  _renderMe() {
    const $ = this._el;
    const name = this.user?.name ?? this._session?.user?.name ?? "";
    $.meName.textContent = name;
    $.meAvatar.textContent = initials(name);
    $.meAvatar.style.setProperty("--hue", String(hueFor(this.user?.id || name)));
    $.signout.hidden = this._session?.mode !== "guest";
  }

  _renderRooms() {
    const $ = this._el;
    if (!this.store) return;
    const dm = this.user ? `dm:${this.user.id}` : null;
    const entries = [];
    if (dm) {
      entries.push(
        this._channelEntry(dm, "Assistant", "Private chat", icon(ICONS.spark, { size: 16 }), {
          "data-testid": "channel-dm",
        }),
      );
    }
    if (this.rooms.length) {
      entries.push(h("li", { class: "section-title", role: "presentation" }, "Rooms"));
    }
    for (const room of this.rooms) {
      const leave = h(
        "button",
        {
          type: "button",
          class: "icon-btn leave",
          "data-testid": "room-leave",
          "aria-label": `Leave #${room}`,
          title: `Leave #${room}`,
          onclick: () => this.leaveRoom(room),
        },
        icon(ICONS.close, { size: 14 }),
      );
      entries.push(
        this._channelEntry(`room:${room}`, room, null, icon(ICONS.hash, { size: 16 }), {
          "data-testid": "room-entry",
          "data-room": room,
          extra: leave,
        }),
      );
    }
    if (!this.rooms.length) {
      entries.push(h("li", { class: "muted small rooms-empty" }, "No rooms yet. Join one below."));
    }
    $.roomList.replaceChildren(...entries);
  }

  _channelEntry(channel, label, sub, glyph, { extra = null, ...attrs } = {}) {
    const current = channel === this.active;
    const unread = this.store?.has(channel) ? this.store.channel(channel).unread : 0;
    const open = h(
      "button",
      {
        type: "button",
        class: "channel-btn",
        "data-testid": attrs["data-testid"] === "room-entry" ? "room-open" : "channel-open",
        "aria-current": current ? "page" : false,
        onclick: () => this._activate(channel),
      },
      h("span", { class: "glyph", "aria-hidden": "true" }, glyph),
      h("span", { class: "label" }, label),
      unread ? h("span", { class: "badge", "aria-label": `${unread} unread` }, unread > 99 ? "99+" : String(unread)) : null,
    );
    return h("li", { class: `channel${current ? " current" : ""}`, "data-channel": channel, ...attrs }, open, extra);
  }

  _renderPresence() {
    const $ = this._el;
    const { kind, name } = splitChannel(this.active ?? "");
    if (kind !== "room" || !this.store) {
      $.presence.hidden = true;
      return;
    }
    const members = this.store.channel(this.active).members;
    $.presence.hidden = false;
    $.presenceTitle.textContent = `Online in #${name} — ${members.length}`;
    $.presenceList.replaceChildren(
      ...members.map((m) =>
        h(
          "li",
          { class: "member", "data-testid": "presence-member", "data-user-id": m.id },
          h("span", { class: "avatar small", style: `--hue:${hueFor(m.id || m.name)}`, "aria-hidden": "true" }, initials(m.name)),
          h("span", { class: "member-name" }, m.name, m.id === this.user?.id ? " (you)" : ""),
        ),
      ),
    );
    this._renderHeader();
  }

  _renderMessages(kinds) {
    const $ = this._el;
    if (!this.store || !this.active) return;
    const sc = $.scroller;
    const atBottom = sc.scrollHeight - sc.scrollTop - sc.clientHeight < NEAR_BOTTOM;
    const prevHeight = sc.scrollHeight;
    const prevTop = sc.scrollTop;
    const prepend = kinds.has("prepend") || this._pendingPrepend;
    this._pendingPrepend = false;
    const busy = kinds.has("reset") || kinds.has("prepend");
    if (busy) sc.setAttribute("aria-busy", "true");

    const items = this.store.list(this.active);
    const ctx = { me: this.user?.id ?? null, onRetry: (it) => this._retry(it), onDiscard: (it) => this._discard(it) };
    const seen = new Set();
    let cursor = $.list.firstChild;
    let prev = null;
    for (const item of items) {
      seen.add(item.key);
      let li = this._nodes.get(item.key);
      if (!li) {
        li = createMessageNode(item, ctx);
        this._nodes.set(item.key, li);
      } else {
        updateMessageNode(li, item);
      }
      li.classList.toggle("cont", continues(prev, item));
      prev = item;
      if (li !== cursor) $.list.insertBefore(li, cursor);
      else cursor = cursor.nextSibling;
    }
    for (const [key, li] of this._nodes) {
      if (!seen.has(key)) {
        li.remove();
        this._nodes.delete(key);
      }
    }

    this._renderEmpty(items.length === 0);
    this._renderThinking(items);
    this._renderOlderMarker();
    this._updateComposer();

    if (prepend && !atBottom) {
      sc.scrollTop = prevTop + (sc.scrollHeight - prevHeight);
    } else if (atBottom || this._forceBottom) {
      this._scrollToBottom(false);
    }
    this._forceBottom = false;
    this._updateJump();
    if (busy) requestAnimationFrame(() => sc.removeAttribute("aria-busy"));
    // A short page that does not fill the view: fetch older until it does (or none are left).
    this._maybeLoadOlder();
  }

  _renderEmpty(isEmpty) {
    const $ = this._el;
    const ch = this.store.channel(this.active);
    $.empty.hidden = !isEmpty || !ch.loaded;
    if ($.empty.hidden) return;
    const { kind, name } = splitChannel(this.active);
    $.empty.replaceChildren(
      h("div", { class: "logo", "aria-hidden": "true" }, icon(kind === "room" ? ICONS.hash : ICONS.spark, { size: 28 })),
      h("h2", {}, kind === "room" ? `This is the start of #${name}` : "How can I help you today?"),
      h(
        "p",
        { class: "muted" },
        kind === "room"
          ? "Say hello. Mention @assistant in a message to ask the assistant."
          : "Ask anything. Your private conversation with the assistant appears here.",
      ),
    );
  }

  /** In the private chat, between the user's message and the first piece of the reply. */
  _renderThinking(items) {
    const last = items.at(-1);
    const waiting =
      this.active?.startsWith("dm:") &&
      last &&
      last.author?.role === "user" &&
      !last.failed &&
      !this.store.streamingIn(this.active) &&
      this.conn?.isOpen &&
      (last.ts ?? 0) > this._lastErrorAt &&
      Date.now() - (last.ts ?? 0) < 120_000;
    this._el.thinking.hidden = !waiting;
  }

  _renderOlderMarker() {
    const $ = this._el;
    if (!this.store || !this.active) return;
    const ch = this.store.channel(this.active);
    const count = this.store.list(this.active).length;
    $.older.replaceChildren();
    if (!ch.loaded) $.older.append(h("span", { class: "spinner", "aria-hidden": "true" }), " Loading messages…");
    else if (ch.loadingOlder) $.older.append(h("span", { class: "spinner", "aria-hidden": "true" }), " Loading older messages…");
    else if (ch.more === false && count > 0 && this._overflows()) $.older.append("Beginning of the conversation");
    $.older.hidden = !$.older.firstChild;
  }

  /** Does the conversation need scrolling? (Only then is "beginning" worth saying.) */
  _overflows() {
    const sc = this._el.scroller;
    return sc.scrollHeight > sc.clientHeight + 8;
  }

  _onScroll() {
    this._maybeLoadOlder();
    this._updateJump();
  }

  _maybeLoadOlder() {
    if (!this.store || !this.active || !this.conn?.isOpen) return;
    const ch = this.store.channel(this.active);
    if (!ch.loaded || ch.loadingOlder || ch.more !== true) return;
    if (this._el.scroller.scrollTop > NEAR_TOP) return;
    this._requestHistory(this.active, true);
  }

  _scrollToBottom(smooth) {
    const sc = this._el.scroller;
    sc.scrollTo({ top: sc.scrollHeight, behavior: smooth ? "smooth" : "instant" });
  }

  _updateJump() {
    const sc = this._el.scroller;
    this._el.jump.hidden = sc.scrollHeight - sc.scrollTop - sc.clientHeight < NEAR_BOTTOM * 3;
  }

  _updateComposer() {
    const $ = this._el;
    const streaming = this.store?.streamingIn(this.active);
    $.stop.hidden = !streaming;
    $.send.disabled = !$.composer.value.trim() || !this.user;
  }

  _autosize() {
    const ta = this._el.composer;
    ta.style.height = "auto";
    ta.style.height = `${Math.min(ta.scrollHeight, 240)}px`;
  }

  // ---- view: state, errors, announcements -------------------------------

  _onState({ state }) {
    this._setIndicator(state);
    const shown = state === "idle" ? "offline" : state;
    if (shown !== this._lastState) this._emit("hub-chat:state", { state: shown });
    this._lastState = shown;
  }

  _setIndicator(state) {
    const $ = this._el;
    const shown = state === "idle" ? "offline" : state;
    $.conn.dataset.state = shown;
    $.stateLabel.textContent = STATE_LABELS[shown];
    $.reconnect.hidden = !(shown === "reconnecting" || shown === "offline") || !this.conn;
    $.reconnect.textContent = shown === "offline" ? "Reconnect" : "Retry now";
  }

  _showError({ title, message }, retryAfter = null) {
    const $ = this._el;
    $.bannerTitle.textContent = title;
    $.bannerText.textContent = message;
    $.banner.hidden = false;
    this._errorTitle = title;
    if (retryAfter) {
      const shownTitle = title;
      this._timers.later(Math.min(retryAfter, 120) * 1000 + 500, () => this._clearErrorIf(shownTitle));
    }
  }

  _clearErrorIf(title) {
    if (this._errorTitle === title) this._hideError();
  }

  _hideError() {
    this._el.banner.hidden = true;
    this._errorTitle = null;
  }

  _announce(text) {
    const el = this._el.announcer;
    el.textContent = "";
    // A fresh text node after a tick is what screen readers reliably notice.
    this._timers.later(50, () => {
      el.textContent = text;
    });
  }


  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail, bubbles: true, composed: true }));
  }
}

if (!customElements.get("hub-chat")) customElements.define("hub-chat", HubChat);
