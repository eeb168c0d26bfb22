// The sidebar: the private chat and the user's rooms, the join form, who is
// online in the open room, and the signed-in user. On narrow screens it is a drawer.

import { h, icon, ICONS } from "../dom.js";
import { hueFor, initials } from "../format.js";

export class SidebarView {
  /**
   * @param {{onOpen: (channel: string) => void, onLeave: (room: string) => void,
   *   onJoin: (name: string) => boolean, onSignOut: () => void, onClose: () => void}} actions
   * @param {HTMLElement} members the presence section, shown under the join form
   */
  constructor(actions, members) {
    this.actions = actions;
    this.roomList = h("ul", { class: "channels", "data-testid": "room-list", "aria-label": "Conversations" });
    this.meName = h("span", { class: "me-name", "data-testid": "me-name" });
    this.meAvatar = h("span", { class: "avatar small", "aria-hidden": "true" });
    this.signout = h(
      "button",
      { type: "button", class: "icon-btn", "data-testid": "signout", "aria-label": "Sign out", title: "Sign out", onclick: () => actions.onSignOut() },
      icon(ICONS.logout, { size: 18 }),
    );
    this.el = h(
      "aside",
      { class: "sidebar", id: "sidebar", "aria-label": "Conversations and rooms" },
      h(
        "div",
        { class: "brand" },
        h("span", { class: "logo small", "aria-hidden": "true" }, icon(ICONS.spark, { size: 16 })),
        h("span", {}, "Chat hub"),
        h(
          "button",
          { type: "button", class: "icon-btn drawer-close", "aria-label": "Close menu", onclick: () => actions.onClose() },
          icon(ICONS.close, { size: 18 }),
        ),
      ),
      h("nav", { class: "nav", "aria-label": "Channels" }, this.roomList),
      this._joinForm(),
      members,
      h("div", { class: "me" }, this.meAvatar, this.meName, this.signout),
    );
  }

  _joinForm() {
    const input = h("input", {
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
    const submit = (e) => {
      e.preventDefault();
      const name = input.value.trim().toLowerCase().replace(/^#/, "");
      if (this.actions.onJoin(name)) input.value = "";
    };
    return h(
      "form",
      { class: "join", "data-testid": "room-form", onsubmit: submit },
      h("label", { for: "room-input" }, "Join or create a room"),
      h(
        "div",
        { class: "join-row" },
        input,
        h("button", { type: "submit", class: "secondary", "data-testid": "room-join" }, "Join"),
      ),
      h("p", { id: "room-help", class: "muted small" }, "Lowercase letters, digits, _ and -"),
    );
  }

  /** Focus the first control (the drawer just opened). */
  focusFirst() {
    this.el.querySelector("button, input")?.focus({ preventScroll: true });
  }

  /** The signed-in user at the bottom; Sign out only for a guest. */
  renderMe({ id, name, guest }) {
    this.meName.textContent = name;
    this.meAvatar.textContent = initials(name);
    this.meAvatar.style.setProperty("--hue", String(hueFor(id || name)));
    this.signout.hidden = !guest;
  }

  /**
   * @param {{dm: string|null, rooms: string[], active: string|null, unread: (channel: string) => number}} view
   */
  renderChannels({ dm, rooms, active, unread }) {
    const entry = (channel, label, glyph, attrs, extra = null) =>
      channelEntry({ channel, label, glyph, current: channel === active, unread: unread(channel), attrs, extra }, this.actions);
    const entries = [];
    if (dm) entries.push(entry(dm, "Assistant", icon(ICONS.spark, { size: 16 }), { "data-testid": "channel-dm" }));
    if (rooms.length) entries.push(h("li", { class: "section-title", role: "presentation" }, "Rooms"));
    for (const room of rooms) {
      const attrs = { "data-testid": "room-entry", "data-room": room };
      entries.push(entry(`room:${room}`, room, icon(ICONS.hash, { size: 16 }), attrs, this._leaveButton(room)));
    }
    if (!rooms.length) entries.push(h("li", { class: "muted small rooms-empty" }, "No rooms yet. Join one below."));
    this.roomList.replaceChildren(...entries);
  }

  _leaveButton(room) {
    return h(
      "button",
      {
        type: "button",
        class: "icon-btn leave",
        "data-testid": "room-leave",
        "aria-label": `Leave #${room}`,
        title: `Leave #${room}`,
        onclick: () => this.actions.onLeave(room),
      },
      icon(ICONS.close, { size: 14 }),
    );
  }
}

function channelEntry({ channel, label, glyph, current, unread, attrs, extra }, actions) {
  const open = h(
    "button",
    {
      type: "button",
      class: "channel-btn",
      "data-testid": attrs["data-testid"] === "room-entry" ? "room-open" : "channel-open",
      "aria-current": current ? "page" : false,
      onclick: () => actions.onOpen(channel),
    },
    h("span", { class: "glyph", "aria-hidden": "true" }, glyph),
    h("span", { class: "label" }, label),
    unread ? h("span", { class: "badge", "aria-label": `${unread} unread` }, unread > 99 ? "99+" : String(unread)) : null,
  );
  return h("li", { class: `channel${current ? " current" : ""}`, "data-channel": channel, ...attrs }, open, extra);
}
