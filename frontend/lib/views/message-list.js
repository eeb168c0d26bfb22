// The conversation on screen: one <li> per store item, kept by key and updated
// in place, so streaming a reply touches one text node. It follows the bottom
// while the reader is there, keeps the reader's place when older pages are
// prepended, and says when older messages load or none are left.

import { h, icon, ICONS } from "../dom.js";
import { continues, createMessageNode, updateMessageNode } from "../message-view.js";
import { splitChannel } from "../ids.js";

const NEAR_TOP = 160; // px from the top that loads older messages
const NEAR_BOTTOM = 96; // px from the bottom that counts as "following the conversation"

export class MessageListView {
  /** @param {{onRetry: Function, onDiscard: Function, onScroll: () => void}} actions */
  constructor({ onRetry, onDiscard, onScroll }) {
    this._actions = { onRetry, onDiscard };
    this._nodes = new Map(); // key -> <li> of the channel on screen
    this._forceBottom = false;
    this.older = h("div", { class: "older", "data-testid": "history-status" });
    this.list = h("ol", { class: "messages" });
    this.empty = h("div", { class: "empty", hidden: true });
    this.thinking = h(
      "div",
      { class: "thinking", "data-testid": "thinking", hidden: true },
      h("div", { class: "avatar", "aria-hidden": "true" }, icon(ICONS.spark, { size: 18 })),
      h("div", { class: "dots", role: "img", "aria-label": "The assistant is thinking" }, h("span"), h("span"), h("span")),
    );
    this.scroller = h(
      "div",
      {
        class: "scroller",
        "data-testid": "message-list",
        role: "log",
        "aria-live": "polite",
        "aria-relevant": "additions",
        "aria-label": "Messages",
        tabindex: "0",
        onscroll: () => {
          onScroll();
          this._updateJump();
        },
      },
      h("div", { class: "thread" }, this.older, this.empty, this.list, this.thinking),
    );
    this.jump = h(
      "button",
      { type: "button", class: "jump", hidden: true, "aria-label": "Jump to latest messages", onclick: () => this.scrollToBottom(true) },
      icon(ICONS.down, { size: 18 }),
    );
    this.el = h("div", { class: "stage" }, this.scroller, this.jump);
  }

  /** Empty the list (another conversation opens); the next render lands at its bottom. */
  reset() {
    this.list.replaceChildren();
    this._nodes.clear();
    this._forceBottom = true;
  }

  /** The next render scrolls to the bottom (the user just sent something). */
  followNext() {
    this._forceBottom = true;
  }

  /** Is the reader near the top, where older messages should load? */
  nearTop() {
    return this.scroller.scrollTop <= NEAR_TOP;
  }

  /**
   * Draw `view.items` of `view.channel`; `kinds` are the store's changes since the
   * last render ("reset", "prepend", "append", "update"). `beforeScroll` runs once
   * the list is drawn and before the scroll position is settled.
   * @param {{channel: string, items: object[], state: object, me: string|null, thinking: boolean}} view
   */
  render(view, kinds, beforeScroll = () => {}) {
    const sc = this.scroller;
    const atBottom = sc.scrollHeight - sc.scrollTop - sc.clientHeight < NEAR_BOTTOM;
    const prevHeight = sc.scrollHeight;
    const prevTop = sc.scrollTop;
    const busy = kinds.has("reset") || kinds.has("prepend");
    if (busy) sc.setAttribute("aria-busy", "true");

    this._drawItems(view.items, view.me);
    this._renderEmpty(view);
    this.thinking.hidden = !view.thinking;
    this.renderStatus(view.state, view.items.length);
    beforeScroll();

    if (kinds.has("prepend") && !atBottom) {
      sc.scrollTop = prevTop + (sc.scrollHeight - prevHeight);
    } else if (atBottom || this._forceBottom) {
      this.scrollToBottom(false);
    }
    this._forceBottom = false;
    this._updateJump();
    if (busy) requestAnimationFrame(() => sc.removeAttribute("aria-busy"));
  }

  /** Above the first message: loading, loading older, or the beginning reached. */
  renderStatus(state, count) {
    const older = this.older;
    older.replaceChildren();
    const spinner = () => h("span", { class: "spinner", "aria-hidden": "true" });
    if (!state.loaded) older.append(spinner(), " Loading messages…");
    else if (state.loadingOlder) older.append(spinner(), " Loading older messages…");
    else if (state.more === false && count > 0 && this._overflows()) older.append("Beginning of the conversation");
    older.hidden = !older.firstChild;
  }

  scrollToBottom(smooth) {
    const sc = this.scroller;
    sc.scrollTo({ top: sc.scrollHeight, behavior: smooth ? "smooth" : "instant" });
  }

  /** Create, update, reorder and remove <li>s so the list matches `items`. */
  _drawItems(items, me) {
    const ctx = { me, ...this._actions };
    const seen = new Set();
    let cursor = this.list.firstChild;
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
      if (li !== cursor) this.list.insertBefore(li, cursor);
      else cursor = cursor.nextSibling;
    }
    for (const [key, li] of this._nodes) {
      if (!seen.has(key)) {
        li.remove();
        this._nodes.delete(key);
      }
    }
  }

  _renderEmpty({ channel, items, state }) {
    this.empty.hidden = items.length > 0 || !state.loaded;
    if (this.empty.hidden) return;
    const { kind, name } = splitChannel(channel);
    const room = kind === "room";
    this.empty.replaceChildren(
      h("div", { class: "logo", "aria-hidden": "true" }, icon(room ? ICONS.hash : ICONS.spark, { size: 28 })),
      h("h2", {}, room ? `This is the start of #${name}` : "How can I help you today?"),
      h(
        "p",
        { class: "muted" },
        room
          ? "Say hello. Mention @assistant in a message to ask the assistant."
          : "Ask anything. Your private conversation with the assistant appears here.",
      ),
    );
  }

  /** Does the conversation need scrolling? (Only then is "beginning" worth saying.) */
  _overflows() {
    const sc = this.scroller;
    return sc.scrollHeight > sc.clientHeight + 8;
  }

  _updateJump() {
    const sc = this.scroller;
    this.jump.hidden = sc.scrollHeight - sc.scrollTop - sc.clientHeight < NEAR_BOTTOM * 3;
  }
}
