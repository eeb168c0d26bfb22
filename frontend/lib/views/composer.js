// The composer: a growing text box, Send, and Stop while a reply streams.
// Enter sends, Shift+Enter starts a new line (an IME composition is left alone).

import { h, icon, ICONS } from "../dom.js";

const MAX_HEIGHT = 240; // px the box grows to before it scrolls

const HINTS = {
  room: "Enter to send · Shift+Enter for a new line · Mention @assistant to ask the assistant",
  dm: "Enter to send · Shift+Enter for a new line",
};

export class ComposerView {
  /** @param {{onSubmit: () => void, onStop: () => void}} actions */
  constructor({ onSubmit, onStop }) {
    this._canSend = false;
    this.box = h("textarea", {
      id: "composer",
      "data-testid": "composer",
      rows: "1",
      placeholder: "Message the assistant",
      "aria-describedby": "composer-hint",
      enterkeyhint: "send",
      oninput: () => {
        this._autosize();
        this._updateSend();
      },
      onkeydown: (e) => {
        if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
          e.preventDefault();
          onSubmit();
        }
      },
    });
    this.send = h(
      "button",
      { type: "submit", class: "send", "data-testid": "send", "aria-label": "Send message", title: "Send (Enter)", disabled: true },
      icon(ICONS.send, { size: 18 }),
    );
    this.stop = h(
      "button",
      { type: "button", class: "stop", "data-testid": "stop", "aria-label": "Stop the reply", title: "Stop", hidden: true, onclick: () => onStop() },
      icon(ICONS.stop, { size: 16 }),
    );
    this.hint = h("p", { class: "hint", id: "composer-hint" });
    const submit = (e) => {
      e.preventDefault();
      onSubmit();
    };
    this.el = h(
      "form",
      { class: "composer", "data-testid": "composer-form", onsubmit: submit },
      h(
        "div",
        { class: "box" },
        h("label", { for: "composer", class: "sr-only" }, "Message"),
        this.box,
        h("div", { class: "actions" }, this.stop, this.send),
      ),
      this.hint,
    );
  }

  /** The text to send: trailing white space removed. */
  get text() {
    return this.box.value.replace(/\s+$/, "");
  }

  /** Placeholder and hint for a room (by name) or, with null, the private chat. */
  setRoom(room) {
    this.box.placeholder = room ? `Message #${room}` : "Message the assistant";
    this.hint.textContent = room ? HINTS.room : HINTS.dm;
  }

  /** Stop shows while a reply streams; Send needs text and a known user. */
  update({ streaming, canSend }) {
    this.stop.hidden = !streaming;
    this._canSend = canSend;
    this._updateSend();
  }

  clear() {
    this.box.value = "";
    this._autosize();
    this._updateSend();
  }

  focus() {
    this.box.focus({ preventScroll: true });
  }

  _updateSend() {
    this.send.disabled = !this.box.value.trim() || !this._canSend;
  }

  _autosize() {
    this.box.style.height = "auto";
    this.box.style.height = `${Math.min(this.box.scrollHeight, MAX_HEIGHT)}px`;
  }
}
