// The guest sign-in screen: a name, a button, and why it failed if it did.

import { h, icon, ICONS } from "../dom.js";

export class SignInView {
  /** @param {{onSubmit: (name: string) => void}} actions */
  constructor({ onSubmit }) {
    this.name = h("input", {
      id: "signin-name",
      "data-testid": "signin-name",
      type: "text",
      name: "name",
      maxlength: "64",
      autocomplete: "nickname",
      required: true,
      placeholder: "e.g. Ada",
    });
    this.submit = h("button", { type: "submit", class: "primary", "data-testid": "signin-submit" }, "Start chatting");
    this.error = h("p", { class: "form-error", role: "alert", "data-testid": "signin-error" });
    this.note = h("p", { class: "muted small" });
    this.el = h(
      "section",
      { class: "signin", hidden: true, "aria-labelledby": "signin-title" },
      h(
        "form",
        {
          class: "card",
          "data-testid": "signin-form",
          onsubmit: (e) => {
            e.preventDefault();
            onSubmit(this.name.value);
          },
        },
        h("div", { class: "logo", "aria-hidden": "true" }, icon(ICONS.spark, { size: 28 })),
        h("h1", { id: "signin-title" }, "Welcome to the chat"),
        h("p", { class: "muted" }, "Talk with the assistant in private, or join a room with others."),
        this.note,
        h("label", { for: "signin-name" }, "Your name"),
        this.name,
        this.submit,
        this.error,
      ),
    );
  }

  /** Show the form with a note above it and the name field filled with `name` if empty. */
  show(note, name) {
    this.el.hidden = false;
    this.note.textContent = note;
    this.error.textContent = "";
    if (!this.name.value) this.name.value = name;
  }

  /** Focus the name field, unless the form was hidden meanwhile. */
  focus() {
    if (!this.el.hidden) this.name.focus({ preventScroll: true });
  }

  fail(message) {
    this.error.textContent = message;
    this.name.focus();
  }

  setBusy(busy) {
    if (busy) this.error.textContent = "";
    this.submit.disabled = busy;
    this.submit.textContent = busy ? "Signing in…" : "Start chatting";
  }
}
