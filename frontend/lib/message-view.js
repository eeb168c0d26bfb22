// One message on screen: built once per item, updated when the item's version
// changes. User and system text is set as text; only an assistant message's
// server-rendered, sanitized `html` is inserted as HTML.

import { h, icon, ICONS, setServerHtml } from "./dom.js";
import { fullTime, hueFor, initials, isoTime, shortTime } from "./format.js";

const STOP_NOTES = {
  stopped: "Stopped",
  max_tokens: "Cut short: the reply reached its length limit",
  error: "The reply ended with an error",
  interrupted: "Interrupted: the reply could not be finished",
};

/**
 * @param {object} item a store item
 * @param {{me: string|null, onRetry: Function, onDiscard: Function}} ctx
 */
export function createMessageNode(item, ctx) {
  const avatar = h("div", { class: "avatar", "aria-hidden": "true" });
  const author = h("span", { class: "author" });
  const time = h("time", { class: "time" });
  const status = h("span", { class: "status" });
  const content = h("div", { class: "content", "data-testid": "message-content" });
  const note = h("div", { class: "note", hidden: true });
  const li = h(
    "li",
    { class: "msg", "data-testid": "message" },
    avatar,
    h("div", { class: "body" }, h("div", { class: "meta" }, author, time, status), content, note),
  );
  li._parts = { avatar, author, time, status, content, note };
  li._ctx = ctx;
  li._version = -1;
  updateMessageNode(li, item);
  return li;
}

export function updateMessageNode(li, item) {
  if (li._version === item.version && li._item === item) return;
  li._version = item.version;
  li._item = item;
  const { avatar, author, time, status, content, note } = li._parts;
  const ctx = li._ctx;
  const role = item.author?.role ?? "user";
  const mine = role === "user" && ctx.me && item.author?.id === ctx.me;

  li.dataset.role = role;
  li.dataset.channel = item.channel;
  li.dataset.key = item.key;
  if (item.id) li.dataset.id = item.id;
  else delete li.dataset.id;
  if (item.reply) li.dataset.reply = item.reply;
  li.dataset.streaming = item.streaming ? "true" : "false";
  li.classList.toggle("mine", Boolean(mine));
  li.classList.toggle("streaming", item.streaming);
  li.classList.toggle("pending", item.pending && !item.failed);
  li.classList.toggle("failed", Boolean(item.failed));
  li.classList.remove("role-user", "role-assistant", "role-system");
  li.classList.add(`role-${role}`);
  if (item.streaming) li.setAttribute("aria-busy", "true");
  else li.removeAttribute("aria-busy");

  // Avatar: the assistant's mark, or the person's initials in a colour of their own.
  avatar.replaceChildren();
  if (role === "assistant") avatar.append(icon(ICONS.spark, { size: 18 }));
  else if (role === "user") {
    avatar.textContent = initials(item.author?.name);
    avatar.style.setProperty("--hue", String(hueFor(item.author?.id || item.author?.name || "")));
  }

  author.textContent = mine ? "You" : item.author?.name || (role === "assistant" ? "Assistant" : "");
  if (item.ts) {
    time.textContent = shortTime(item.ts);
    time.dateTime = isoTime(item.ts);
    time.title = fullTime(item.ts);
  } else {
    time.textContent = "";
  }
  status.textContent = item.failed ? "Not sent" : item.pending ? "Sending…" : "";

  renderContent(content, item, role);

  // A note under the message: why a reply ended early, or why a send failed.
  note.replaceChildren();
  const why = item.failed ? item.failed : !item.streaming ? STOP_NOTES[item.stopReason] : null;
  note.hidden = !why;
  if (why) {
    note.append(h("span", {}, why));
    if (item.failed) {
      note.append(
        h("button", { type: "button", class: "link", "data-testid": "message-retry", onclick: () => ctx.onRetry(item) }, "Retry"),
        h("button", { type: "button", class: "link", "data-testid": "message-discard", onclick: () => ctx.onDiscard(item) }, "Discard"),
      );
    }
  }
}

function renderContent(el, item, role) {
  const asHtml = role === "assistant" && !item.streaming && typeof item.html === "string";
  if (asHtml) {
    if (el._mode !== "html" || el._html !== item.html) {
      setServerHtml(el, item.html);
      el._mode = "html";
      el._html = item.html;
      el.classList.add("md");
    }
    return;
  }
  el.classList.remove("md");
  // Streaming and plain text: one text node whose value changes, so a live
  // region is not flooded with a new node for every piece.
  if (el._mode !== "text" || !el._textNode) {
    el.replaceChildren();
    el._textNode = document.createTextNode("");
    el.append(el._textNode);
    if (role === "assistant") el.append(h("span", { class: "caret", "aria-hidden": "true" }));
    el._mode = "text";
    el._html = null;
  }
  el._textNode.data = item.text ?? "";
  el.classList.toggle("is-streaming", item.streaming);
}

/** Consecutive messages of one author within a few minutes share one header. */
export function continues(prev, item) {
  if (!prev || !item) return false;
  const role = item.author?.role;
  if (role === "system" || prev.author?.role !== role) return false;
  if (prev.author?.id !== item.author?.id) return false;
  return Math.abs((item.ts ?? 0) - (prev.ts ?? 0)) < 5 * 60_000;
}
