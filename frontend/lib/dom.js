// A tiny element builder. Strings always become text nodes: user text is never
// parsed as HTML. The one place HTML is inserted is setServerHtml, for the
// server's sanitized `html` of assistant messages.

/**
 * h("button", {class: "x", "data-testid": "send", onclick: fn}, "Send")
 * Attribute values of false/null/undefined are left out; true sets an empty attribute.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value == null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      el.className = value;
    } else if (name in el && typeof value !== "string" && name !== "list") {
      el[name] = value; // properties such as value, disabled
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace an element's children with text only. */
export function setText(el, text) {
  el.textContent = text ?? "";
}

/** Only for the server's sanitized markdown `html` of assistant messages. */
export function setServerHtml(el, html) {
  el.innerHTML = html;
  for (const a of el.querySelectorAll("a[href]")) {
    a.target = "_blank";
    a.rel = "noopener noreferrer nofollow";
  }
  for (const pre of el.querySelectorAll("pre")) addCopyButton(pre);
}

/** A "Copy" button on a code block, built with DOM calls. */
function addCopyButton(pre) {
  const wrap = document.createElement("div");
  wrap.className = "code-wrap";
  pre.replaceWith(wrap);
  const button = h("button", { type: "button", class: "copy", title: "Copy code" }, "Copy");
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(pre.textContent ?? "");
      button.textContent = "Copied";
    } catch {
      button.textContent = "Copy failed";
    }
  });
  // Back to "Copy" when the pointer or focus moves on (no timer to clean up).
  const reset = () => {
    button.textContent = "Copy";
  };
  button.addEventListener("pointerleave", reset);
  button.addEventListener("blur", reset);
  wrap.append(pre, button);
}

/** An inline SVG icon from path data (built with DOM calls, no markup strings). */
export function icon(paths, { size = 20, label = null } = {}) {
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", String(size));
  svg.setAttribute("height", String(size));
  svg.setAttribute("fill", "none");
  svg.setAttribute("stroke", "currentColor");
  svg.setAttribute("stroke-width", "2");
  svg.setAttribute("stroke-linecap", "round");
  svg.setAttribute("stroke-linejoin", "round");
  if (label) {
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", label);
  } else {
    svg.setAttribute("aria-hidden", "true");
  }
  for (const d of [].concat(paths)) {
    const p = document.createElementNS(NS, "path");
    p.setAttribute("d", d);
    svg.append(p);
  }
  return svg;
}

export const ICONS = {
  send: ["M12 19V5", "M5 12l7-7 7 7"],
  stop: ["M7 7h10v10H7z"],
  menu: ["M4 6h16", "M4 12h16", "M4 18h16"],
  close: ["M6 6l12 12", "M18 6L6 18"],
  hash: ["M5 9h14", "M5 15h14", "M10 3L8 21", "M16 3l-2 18"],
  spark: ["M12 3l1.8 5.2L19 10l-5.2 1.8L12 17l-1.8-5.2L5 10l5.2-1.8z"],
  users: ["M16 21v-2a4 4 0 0 0-4-4H6a4 4 0 0 0-4 4v2", "M9 11a4 4 0 1 0 0-8 4 4 0 0 0 0 8z", "M22 21v-2a4 4 0 0 0-3-3.87", "M16 3.13a4 4 0 0 1 0 7.75"],
  logout: ["M9 21H5a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2h4", "M16 17l5-5-5-5", "M21 12H9"],
  down: ["M12 5v14", "M19 12l-7 7-7-7"],
};
