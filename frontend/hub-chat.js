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
//
// This file holds the element's life and public API, and who it talks as (a
// host's token or a guest's). The chat itself is a ChatClient (lib/chat-client.js:
// connection, frames, store) drawn by a ChatScreen (lib/views/chat-screen.js).

import { guestLogin, loadGuest, loadName, LoginError, peekToken, saveGuest, saveName } from "./lib/auth.js";
import { ChatClient } from "./lib/chat-client.js";
import { loadPlace, savePlace } from "./lib/place.js";
import { h } from "./lib/dom.js";
import { splitChannel } from "./lib/ids.js";
import { Timers } from "./lib/timers.js";
import { ChatScreen } from "./lib/views/chat-screen.js";
import { SignInView } from "./lib/views/signin.js";

const CSS_URL = new URL("./hub-chat.css", import.meta.url).href;
const RELOGIN_EVERY = 60_000; // ms: a guest signs in again at most this often by itself

export class HubChat extends HTMLElement {
  static observedAttributes = ["hub", "token", "room", "theme"];

  constructor() {
    super();
    this.attachShadow({ mode: "open" });
    this._built = false;
    this._tokenProp = null;
    this._session = null; // {token, user, mode: "host"|"guest"}
    this.client = null; // the ChatClient of the session
    this._timers = new Timers();
    this._loginAbort = null;
    this._reloginAt = 0;
    this._placeIds = {}; // last ids this tab came back with (a reload)
    this._savePlace = () => this._rememberPlace();
    this._onHidden = () => document.visibilityState === "hidden" && this._rememberPlace();
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

  get user() {
    return this.client?.user ?? null;
  }

  get rooms() {
    return this.client?.rooms ?? [];
  }

  /** A snapshot for debugging and tests. */
  get state() {
    const conn = this.client?.conn;
    return {
      connection: conn?.state ?? "idle",
      worker: conn?.worker ?? null,
      user: this.user,
      channel: this._screen?.active ?? null,
      rooms: [...this.rooms],
      unacked: conn ? conn.unacked.size : 0,
      lastIds: this.client ? this.client.store.resumePoints() : {},
    };
  }

  /** Open a channel ("dm:…" or "room:…") or join a room by name. */
  open(target) {
    if (!target) return;
    if (target.startsWith("dm:") || target.startsWith("room:")) {
      const { kind, name } = splitChannel(target);
      if (kind === "room" && !this.rooms.includes(name)) return this.joinRoom(name);
      return this._screen.activate(target);
    }
    return this.joinRoom(target);
  }

  /** Join a room by name (or open it when the user is in it already); false when refused. */
  joinRoom(name) {
    return this._screen.joinRoom(name);
  }

  leaveRoom(name) {
    this._screen.leaveRoom(name);
  }

  signOut() {
    savePlace(this.hub, this.user?.id, null);
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
    // A reload (or a phone discarding the tab) comes back to the same place.
    globalThis.addEventListener("pagehide", this._savePlace);
    document.addEventListener("visibilitychange", this._onHidden);
    this._boot();
  }

  disconnectedCallback() {
    this._rememberPlace();
    globalThis.removeEventListener("pagehide", this._savePlace);
    document.removeEventListener("visibilitychange", this._onHidden);
    this._endSession();
    this._loginAbort?.abort();
    this._loginAbort = null;
    this._timers.clear();
  }

  attributeChangedCallback(name, oldValue, value) {
    if (!this._built || oldValue === value) return;
    if (name === "hub" || (name === "token" && this._tokenProp == null)) this._boot();
    if (name === "room" && value && this.client?.conn.isOpen) this.joinRoom(value);
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
    const place = loadPlace(this.hub, this._session.user?.id);
    const token = () => this._session?.token ?? null;
    this._placeIds = place?.lastIds ?? {};
    const client = new ChatClient({ hub: this.hub, token, user: this._session.user, resumeFrom: place?.lastIds });
    this.client = client;
    client.conn.addEventListener("unauthorized", () => this._onUnauthorized());
    client.conn.addEventListener("fatal", (ev) => this._onFatal(ev.detail));
    this._signin.el.hidden = true;
    this._screen.attach(client, place?.active);
    client.start();
  }

  /** Save the open conversation and the last ids, for a reload of this tab. */
  _rememberPlace() {
    const client = this.client;
    const active = this._screen?.active;
    if (!client?.user || !active) return;
    // Channels still loading keep the ids this tab came back with.
    const lastIds = { ...this._placeIds, ...client.store.resumePoints() };
    if (client.welcomed) for (const ch of Object.keys(lastIds)) if (!client.isMine(ch)) delete lastIds[ch];
    savePlace(this.hub, client.user.id, { active, lastIds });
  }

  _endSession() {
    this.client?.stop();
    this.client = null;
    this._screen?.detach();
  }

  async _signIn(name) {
    const clean = name.trim().replace(/\s+/g, " ");
    if (!clean) return this._signin.fail("Enter a name to continue.");
    this._signin.setBusy(true);
    this._loginAbort?.abort();
    this._loginAbort = new AbortController();
    try {
      const session = await guestLogin(this.hub, clean.slice(0, 64), { signal: this._loginAbort.signal });
      saveName(this.hub, clean);
      this._startGuest(session);
    } catch (err) {
      if (err?.name === "AbortError") return;
      this._signin.fail(err instanceof LoginError ? err.message : "Sign-in failed. Try again.");
    } finally {
      this._signin.setBusy(false);
    }
  }

  _startGuest(session) {
    saveGuest(this.hub, session);
    this._session = { ...session, mode: "guest" };
    this._startSession();
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
    if (this._session?.mode !== "guest") {
      this._screen.setIndicator("offline");
      this._screen.banner.show({ title: "Signed out", message: "Your access to the chat expired. Reload the page to sign in again." });
      this._emit("hub-chat:token-expired", {});
      return;
    }
    saveGuest(this.hub, null);
    const name = loadName(this.hub) || this._session.user?.name;
    // Not too often, so a hub that rejects every token does not loop.
    if (name && Date.now() - this._reloginAt > RELOGIN_EVERY) {
      this._reloginAt = Date.now();
      try {
        return this._startGuest(await guestLogin(this.hub, name));
      } catch {
        /* fall through to the form */
      }
    }
    this._session = null;
    this._showSignIn("Your session ended. Sign in again to continue.", { byUser: true });
  }

  _onFatal({ code }) {
    const message =
      code === 1009
        ? "A message was too large for the hub. Shorten it and reconnect."
        : "The hub closed the connection. Select Reconnect to continue.";
    this._screen.banner.show({ title: "Disconnected", message });
  }

  // ---- building ---------------------------------------------------------

  _build() {
    this._built = true;
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
    this._signin = new SignInView({ onSubmit: (name) => this._signIn(name) });
    this._screen = new ChatScreen(
      {
        emit: (type, detail) => this._emit(type, detail),
        signOut: () => this.signOut(),
        startRoom: () => this.getAttribute("room"),
        me: () => ({ name: this._session?.user?.name ?? "", guest: this._session?.mode === "guest" }),
        moved: () => this._rememberPlace(),
      },
      this._timers,
    );
    app.append(this._signin.el, this._screen.el, this._screen.announcer.el);
    this.shadowRoot.append(link, app);
    this.shadowRoot.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && this._screen.el.classList.contains("drawer-open")) this._screen.toggleDrawer(false);
    });
  }

  /** `byUser`: the person got here by an action (sign out, session ended), so focus follows. */
  _showSignIn(note = "", { byUser = false } = {}) {
    this._screen.el.hidden = true;
    this._signin.show(note, loadName(this.hub));
    this._screen.setIndicator("offline");
    // An embed takes focus only when asked to (autofocus), never on its own at page load.
    if (byUser || this.hasAttribute("autofocus")) this._styled.then(() => this._signin.focus());
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail, bubbles: true, composed: true }));
  }
}

if (!customElements.get("hub-chat")) customElements.define("hub-chat", HubChat);
