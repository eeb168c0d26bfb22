// The host page listens to the element's events.
const chat = document.querySelector("hub-chat");
chat.addEventListener("hub-chat:ready", (e) => console.log("chat ready for", e.detail.user));
chat.addEventListener("hub-chat:token-expired", async () => {
  // A host app fetches a fresh token from its own backend here, e.g.:
  // chat.token = (await (await fetch("/my-app/hub-token")).json()).token;
});
