// One-shot timers that are all cleared together when their owner goes away.

export class Timers {
  constructor() {
    this._ids = new Set();
  }

  /** Run fn after ms, unless clear() comes first. */
  later(ms, fn) {
    const id = setTimeout(() => {
      this._ids.delete(id);
      fn();
    }, ms);
    this._ids.add(id);
  }

  /** Cancel every timer still pending. */
  clear() {
    for (const id of this._ids) clearTimeout(id);
    this._ids.clear();
  }
}
