// The WebSocket to the hub: hello with resume points, reconnect with backoff and
// jitter, a queue of sends kept until acked (and re-sent with the same ref after
// a reconnect, so the server stores each once), and a state for the indicator.
//
// Events: "state" {state, delay?}, "frame" {frame}, "unauthorized" {}, "fatal" {code, reason}.
// States: connecting (first try), open (welcomed), reconnecting (waiting or
// retrying after a drop), offline (the browser is offline, or stopped for good).

import { Timers } from "./timers.js";

const BASE_DELAY = 500; // ms, the first retry after a drop
const MAX_DELAY = 30_000; // ms, the longest wait between tries
const STABLE_AFTER = 10_000; // ms open before the backoff starts again from BASE_DELAY
const HELLO_TIMEOUT = 15_000; // ms to wait for welcome after the socket opens
const PING_EVERY = 25_000; // ms between application pings
const SILENCE_LIMIT = 60_000; // ms without any frame before the socket counts as dead
const MAX_QUEUED = 200; // sends kept while offline

/** ws(s)://host/base/ws from the hub's http(s) base URL. */
export function wsUrlFor(hub) {
  const url = new URL(hub, globalThis.location?.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.pathname = `${url.pathname.replace(/\/+$/, "")}/ws`;
  url.search = "";
  url.hash = "";
  return url.toString();
}

/** The wait before retry number `attempt` (0-based): doubling, capped, with jitter. */
export function backoffDelay(attempt) {
  const ceiling = Math.min(MAX_DELAY, BASE_DELAY * 2 ** Math.min(attempt, 16));
  // "Equal jitter": half fixed, half random, so clients spread out yet never retry at once.
  return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
}

export class Connection extends EventTarget {
  /**
   * @param {{url: string, token: () => string|null, resume: () => Record<string,string>}} opts
   */
  constructor({ url, token, resume }) {
    super();
    this.url = url;
    this._token = token;
    this._resume = resume;
    this.state = "idle";
    this.worker = null;
    this.ws = null;
    this.attempt = 0;
    this.unacked = new Map(); // ref -> send frame, in send order
    this._timers = new Timers();
    this._pingTimer = null;
    this._lastRx = 0;
    this._wanted = false;
    this._welcomed = false;
    this._onOnline = () => this._retryNow();
    this._onOffline = () => {
      if (this.state !== "open") this._setState("offline");
    };
    this._onVisible = () => {
      if (document.visibilityState === "visible" && this.state === "reconnecting") this._retryNow();
    };
  }

  get isOpen() {
    return this.state === "open";
  }

  start() {
    if (this._wanted) return;
    this._wanted = true;
    globalThis.addEventListener?.("online", this._onOnline);
    globalThis.addEventListener?.("offline", this._onOffline);
    globalThis.document?.addEventListener("visibilitychange", this._onVisible);
    this._connect();
  }

  /** Close for good (element removed, signed out). Unacked sends are forgotten. */
  stop() {
    this._wanted = false;
    globalThis.removeEventListener?.("online", this._onOnline);
    globalThis.removeEventListener?.("offline", this._onOffline);
    globalThis.document?.removeEventListener("visibilitychange", this._onVisible);
    this._clearTimers();
    this._dropSocket(1000, "client stopped");
    this.unacked.clear();
    this._setState("idle");
  }

  /** Try again now (the "Reconnect" button, the browser coming online). */
  retry() {
    if (!this._wanted) {
      this.start();
      return;
    }
    this._retryNow();
  }

  /** Send a frame if welcomed; returns false when it could not be sent. */
  send(frame) {
    if (!this.isOpen || !this.ws) return false;
    try {
      this.ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  /** A chat message: kept until acked, sent now or after the next welcome. */
  sendMessage(channel, text, ref) {
    const frame = { type: "send", channel, text, ref };
    if (this.unacked.size >= MAX_QUEUED) return false;
    this.unacked.set(ref, frame);
    this.send(frame);
    return true;
  }

  /** Forget a send (acked, refused or discarded by the user). */
  settle(ref) {
    this.unacked.delete(ref);
  }

  _retryNow() {
    if (!this._wanted || this.state === "open" || this.state === "connecting") return;
    this._clearTimers();
    this._connect();
  }

  _connect() {
    this._dropSocket();
    const token = this._token();
    if (!token) {
      this.dispatchEvent(new CustomEvent("unauthorized"));
      return;
    }
    this._setState(this.attempt === 0 && !this._welcomed ? "connecting" : "reconnecting");
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this._scheduleReconnect(null);
      return;
    }
    this.ws = ws;
    this._welcomedThis = false;
    ws.onopen = () => {
      const hello = { type: "hello", token };
      const resume = this._resume();
      if (resume && Object.keys(resume).length) hello.resume = resume;
      ws.send(JSON.stringify(hello));
      this._lastRx = Date.now();
      this._timers.later(HELLO_TIMEOUT, () => {
        if (this.ws === ws && !this._welcomedThis) this._dropAndRetry(ws);
      });
    };
    ws.onmessage = (ev) => this._onMessage(ws, ev);
    ws.onclose = (ev) => this._onClose(ws, ev);
    ws.onerror = () => {
      /* onclose follows and decides */
    };
  }

  _onMessage(ws, ev) {
    if (ws !== this.ws) return;
    this._lastRx = Date.now();
    let frame;
    try {
      frame = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (!frame || typeof frame.type !== "string") return;
    if (frame.type === "welcome") {
      this._welcomed = true;
      this._welcomedThis = true;
      this.worker = frame.worker ?? null;
      this._setState("open");
      this._startPings(ws);
      this._timers.later(STABLE_AFTER, () => {
        if (this.ws === ws && this.isOpen) this.attempt = 0;
      });
      // The element handles welcome first (resets, history), then queued sends go out.
      this.dispatchEvent(new CustomEvent("frame", { detail: { frame } }));
      for (const f of this.unacked.values()) this.send(f);
      return;
    }
    if ((frame.type === "ack" || frame.type === "error") && frame.ref) this.unacked.delete(frame.ref);
    if (frame.type === "pong") return;
    this.dispatchEvent(new CustomEvent("frame", { detail: { frame } }));
  }

  _onClose(ws, ev) {
    if (ws !== this.ws) return;
    this.ws = null;
    this._stopPings();
    if (!this._wanted) return;
    const code = ev.code;
    if (code === 4001) {
      this._setState("offline");
      this.dispatchEvent(new CustomEvent("unauthorized"));
      return;
    }
    if (code === 1000 || code === 1009) {
      // The server ended the session on purpose, or the client sent too much: no loop.
      this._setState("offline");
      this.dispatchEvent(new CustomEvent("fatal", { detail: { code, reason: ev.reason || "" } }));
      return;
    }
    if (code === 1012) {
      // A worker draining: another one is ready now; a little jitter spreads the herd.
      this.attempt = 0;
      this._scheduleReconnect(Math.round(Math.random() * 500));
      return;
    }
    if (code === 4029) this.attempt = Math.max(this.attempt, 6); // told to back off: near the cap
    this._scheduleReconnect(null);
  }

  _scheduleReconnect(delay) {
    const wait = delay ?? backoffDelay(this.attempt);
    this.attempt += 1;
    if (globalThis.navigator?.onLine === false) {
      this._setState("offline"); // the "online" event retries
      return;
    }
    this._setState("reconnecting", { delay: wait });
    this._timers.later(wait, () => this._connect());
  }

  _dropAndRetry(ws) {
    if (ws !== this.ws) return;
    this._dropSocket(4000, "no answer");
    this._scheduleReconnect(null);
  }

  _dropSocket(code = 1000, reason = "") {
    const ws = this.ws;
    this.ws = null;
    this._stopPings();
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(code, reason);
    } catch {
      /* already closed */
    }
  }

  _startPings(ws) {
    this._stopPings();
    this._pingTimer = setInterval(() => {
      if (this.ws !== ws) return this._stopPings();
      if (Date.now() - this._lastRx > SILENCE_LIMIT) return this._dropAndRetry(ws);
      this.send({ type: "ping" });
    }, PING_EVERY);
  }

  _stopPings() {
    if (this._pingTimer) clearInterval(this._pingTimer);
    this._pingTimer = null;
  }

  _clearTimers() {
    this._timers.clear();
    this._stopPings();
  }

  _setState(state, extra = {}) {
    const changed = state !== this.state;
    this.state = state;
    if (changed || extra.delay != null) {
      this.dispatchEvent(new CustomEvent("state", { detail: { state, ...extra } }));
    }
  }
}
