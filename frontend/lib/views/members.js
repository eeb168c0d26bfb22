// Who is online in the open room, under the sidebar's channel list.

import { h } from "../dom.js";
import { hueFor, initials } from "../format.js";

export class MembersView {
  constructor() {
    this.title = h("h2", { class: "section-title", id: "presence-title" }, "Online");
    this.list = h("ul", { class: "members", "data-testid": "presence-list", "aria-labelledby": "presence-title" });
    this.el = h("section", { class: "presence", "data-testid": "presence", hidden: true }, this.title, this.list);
  }

  hide() {
    this.el.hidden = true;
  }

  /** The members of room `name`; `me` is the user's id, marked "(you)". */
  render(name, members, me) {
    this.el.hidden = false;
    this.title.textContent = `Online in #${name} — ${members.length}`;
    this.list.replaceChildren(...members.map((m) => memberNode(m, me)));
  }
}

function memberNode(m, me) {
  return h(
    "li",
    { class: "member", "data-testid": "presence-member", "data-user-id": m.id },
    h("span", { class: "avatar small", style: `--hue:${hueFor(m.id || m.name)}`, "aria-hidden": "true" }, initials(m.name)),
    h("span", { class: "member-name" }, m.name, m.id === me ? " (you)" : ""),
  );
}
