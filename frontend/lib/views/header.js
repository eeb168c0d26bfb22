// The bar above the conversation: the menu button (narrow screens), the open
// conversation's title, and the connection's state with a Retry/Reconnect button.

import { h, icon, ICONS } from "../dom.js";
import { STATE_LABELS } from "../format.js";

export class HeaderView {
  /** @param {{onMenu: () => void, onReconnect: () => void}} actions */
  constructor({ onMenu, onReconnect }) {
    this.menu = h(
      "button",
      {
        type: "button",
        class: "icon-btn menu",
        "data-testid": "menu-toggle",
        "aria-label": "Open menu",
        "aria-controls": "sidebar",
        "aria-expanded": "false",
        onclick: () => onMenu(),
      },
      icon(ICONS.menu),
    );
    this.title = h("h1", { class: "title", "data-testid": "channel-title" });
    this.subtitle = h("p", { class: "subtitle" });
    this.stateLabel = h("span", { class: "conn-label" });
    this.conn = h(
      "div",
      { class: "conn", "data-testid": "connection-state", "data-state": "connecting", role: "status" },
      h("span", { class: "dot", "aria-hidden": "true" }),
      this.stateLabel,
    );
    this.reconnect = h(
      "button",
      { type: "button", class: "link", "data-testid": "reconnect", hidden: true, onclick: () => onReconnect() },
      "Retry now",
    );
    this.el = h(
      "header",
      { class: "topbar" },
      this.menu,
      h("div", { class: "heading" }, this.title, this.subtitle),
      h("div", { class: "conn-wrap" }, this.conn, this.reconnect),
    );
  }

  setTitle(title, subtitle) {
    // Unchanged text is left alone: presence diffs ask often, screen readers notice writes.
    if (this.title.textContent !== title) this.title.textContent = title;
    if (this.subtitle.textContent !== subtitle) this.subtitle.textContent = subtitle;
  }

  setDrawerOpen(open) {
    this.menu.setAttribute("aria-expanded", String(open));
  }

  /** The indicator; the button shows only while a connection exists to retry. */
  setConnection(state, canRetry) {
    const shown = state === "idle" ? "offline" : state;
    this.conn.dataset.state = shown;
    this.stateLabel.textContent = STATE_LABELS[shown];
    this.reconnect.hidden = !(shown === "reconnecting" || shown === "offline") || !canRetry;
    this.reconnect.textContent = shown === "offline" ? "Reconnect" : "Retry now";
  }
}
