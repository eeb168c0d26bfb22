// History pages asked of the hub, one in flight per connection (the hub refuses
// a second one): the others wait in line, the conversation on screen first.

import { newRef } from "./ids.js";

export class HistoryRequests {
  /**
   * @param {(frame: object) => boolean} send false when the frame could not go out
   * @param {(request: {channel: string, older: boolean}) => void} onDropped a request that will get no answer
   */
  constructor(send, onDropped) {
    this._send = send;
    this._onDropped = onDropped;
    this._requests = new Map(); // ref -> {channel, older, frame}, waiting or in flight
    this._line = []; // refs waiting, in order
    this._inFlight = null; // the ref sent and not answered yet
    this.focus = null; // the channel on screen: its requests go first
  }

  /** Ask for a page (`frame` without its ref). */
  add(frame, { channel, older }) {
    const ref = newRef();
    this._requests.set(ref, { channel, older, frame: { ...frame, ref } });
    this._line.push(ref);
    this._next();
  }

  /** The answer (or error) to `ref` came: its request, or null when `ref` is not one of ours. */
  settle(ref) {
    const request = this._requests.get(ref);
    if (!request) return null;
    this._requests.delete(ref);
    this._line = this._line.filter((r) => r !== ref);
    if (this._inFlight === ref) {
      this._inFlight = null;
      this._next();
    }
    return request;
  }

  /** A new connection: nothing asked before is answered on it. */
  dropAll() {
    for (const request of this._requests.values()) this._onDropped(request);
    this._requests.clear();
    this._line = [];
    this._inFlight = null;
  }

  _next() {
    if (this._inFlight || !this._line.length) return;
    const at = Math.max(0, this._line.findIndex((ref) => this._requests.get(ref).channel === this.focus));
    const [ref] = this._line.splice(at, 1);
    const request = this._requests.get(ref);
    if (this._send(request.frame)) {
      this._inFlight = ref;
      return;
    }
    this.dropAll(); // not connected: the next welcome asks again
  }
}
