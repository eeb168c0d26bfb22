// Who is online in the open room, under the sidebar's channel list: the count,
// the members held so far in the hub's order, and more of them on demand (a
// button, pressed by itself when it scrolls into view). A diff moves only the
// nodes it names, so a room of 10,000 never redraws its whole list.

import { h } from "../dom.js";
import { formatCount, hueFor, initials } from "../format.js";
import { compareMembers } from "../roster.js";

export class MembersView {
  /** @param {{onMore: () => void}} actions */
  constructor({ onMore }) {
    this._nodes = new Map(); // member id -> <li>
    this._room = null;
    this._me = null;
    this._roster = null;
    this.title = h("h2", { class: "section-title", id: "presence-title", "data-testid": "presence-count" }, "Online");
    this.list = h("ul", { class: "members", "data-testid": "presence-list", "aria-labelledby": "presence-title" });
    this.more = h("button", { type: "button", class: "link more", "data-testid": "presence-more", hidden: true, onclick: () => onMore() });
    this.el = h("section", { class: "presence", "data-testid": "presence", hidden: true }, this.title, h("div", { class: "members-scroll" }, this.list, this.more));
    // The button pages by itself once a person scrolls down to it.
    this._observer = new IntersectionObserver(
      (entries) => {
        if (entries.some((e) => e.isIntersecting) && this._roster?.more && !this._roster.loadingMore) onMore();
      },
      { root: this.more.parentElement, rootMargin: "0px 0px 120px 0px" },
    );
    this._observer.observe(this.more);
  }

  hide() {
    this.el.hidden = true;
    this._room = null;
  }

  /** Draw room `room`'s roster from scratch (the room opened, or a snapshot came); `me` is marked "(you)". */
  render(room, roster, me) {
    this.el.hidden = false;
    this._room = room;
    this._me = me;
    this._roster = roster;
    this._nodes.clear();
    const nodes = roster.members.map((m) => this._node(m));
    this.list.replaceChildren(...nodes);
    this._renderCounts();
  }

  /** Apply a diff or a page ({added, removed}) to the list on screen. */
  apply(roster, { added, removed }) {
    this._roster = roster;
    for (const id of removed) {
      this._nodes.get(id)?.remove();
      this._nodes.delete(id);
    }
    // Last first: each one's successor in the roster is then on screen already.
    for (const m of [...added].sort((a, b) => compareMembers(b, a))) {
      const old = this._nodes.get(m.id);
      if (old) old.remove();
      const li = this._node(m);
      const next = roster.members[roster.indexOf(m) + 1];
      this.list.insertBefore(li, (next && this._nodes.get(next.id)) || null);
    }
    this._renderCounts();
  }

  _renderCounts() {
    const roster = this._roster;
    this.title.textContent = `Online in #${this._room} — ${formatCount(roster.online)}`;
    this.more.hidden = !roster.more;
    this.more.disabled = roster.loadingMore;
    const rest = Math.max(0, roster.online - roster.members.length);
    this.more.textContent = roster.loadingMore ? "Loading…" : rest ? `Show more (${formatCount(rest)} more online)` : "Show more";
  }

  _node(m) {
    const li = h(
      "li",
      { class: "member", "data-testid": "presence-member", "data-user-id": m.id },
      h("span", { class: "avatar small", style: `--hue:${hueFor(m.id || m.name)}`, "aria-hidden": "true" }, initials(m.name)),
      h("span", { class: "member-name" }, m.name, m.id === this._me ? " (you)" : ""),
    );
    this._nodes.set(m.id, li);
    return li;
  }
}
