// What the element tells a person besides messages: an error banner that can be
// dismissed (and clears itself after a retry_after), and a live region read out
// by screen readers.

import { h, icon, ICONS } from "../dom.js";

export class BannerView {
  /** @param {import("../timers.js").Timers} timers cleared with the element */
  constructor(timers) {
    this._timers = timers;
    this._shown = null; // the title on screen, or null
    this.title = h("strong", {});
    this.text = h("span", {});
    this.el = h(
      "div",
      { class: "banner", "data-testid": "error-banner", role: "alert", hidden: true },
      h("div", { class: "banner-text" }, this.title, " ", this.text),
      h(
        "button",
        { type: "button", class: "icon-btn", "data-testid": "error-dismiss", "aria-label": "Dismiss message", onclick: () => this.hide() },
        icon(ICONS.close, { size: 16 }),
      ),
    );
  }

  show({ title, message }, retryAfter = null) {
    this.title.textContent = title;
    this.text.textContent = message;
    this.el.hidden = false;
    this._shown = title;
    if (retryAfter) {
      this._timers.later(Math.min(retryAfter, 120) * 1000 + 500, () => this.clearIf(title));
    }
  }

  /** Hide the banner if it still shows this title (a newer error stays). */
  clearIf(title) {
    if (this._shown === title) this.hide();
  }

  hide() {
    this.el.hidden = true;
    this._shown = null;
  }
}

export class AnnouncerView {
  constructor(timers) {
    this._timers = timers;
    this.el = h("div", { class: "sr-only", "aria-live": "polite", "data-testid": "announcer" });
  }

  say(text) {
    this.el.textContent = "";
    // A fresh text node after a tick is what screen readers reliably notice.
    this._timers.later(50, () => {
      this.el.textContent = text;
    });
  }
}
