// Anima dashboard: live refresh with EventSource. Everything received is either HTML the
// server escaped (fragments) or text placed with textContent: nothing is evaluated.
"use strict";

function overview() {
  const live = document.getElementById("live");
  const events = new EventSource("/events/overview");
  events.addEventListener("overview", (e) => { live.innerHTML = e.data; });
}

function chat(body) {
  const agent = body.dataset.agent;
  const conversation = body.dataset.conversation;
  const chatBox = document.getElementById("chat");
  const streaming = document.getElementById("streaming");
  const bubbles = new Map();
  const q = new URLSearchParams({ c: conversation, pending: body.dataset.pending || "", marker: body.dataset.marker || "" });
  const refresh = async () => {
    const r = await fetch(`/agents/${encodeURIComponent(agent)}/chat/fragment?` + new URLSearchParams({ c: conversation }));
    if (!r.ok) return;
    chatBox.innerHTML = await r.text();
    for (const [id, el] of bubbles) { if (el.dataset.done) { el.remove(); bubbles.delete(id); } }
  };
  const bubbleFor = (id) => {
    let el = bubbles.get(id);
    if (!el) {
      el = document.createElement("div");
      el.className = "bubble agent";
      el.id = "stream-" + id;
      const who = document.createElement("p");
      who.className = "who";
      who.textContent = agent + " (replying…)";
      const text = document.createElement("div");
      text.className = "text";
      el.append(who, text);
      streaming.append(el);
      bubbles.set(id, el);
    }
    return el;
  };
  const events = new EventSource(`/agents/${encodeURIComponent(agent)}/events?` + q);
  events.addEventListener("delta", (e) => {
    const ev = JSON.parse(e.data);
    const el = bubbleFor(ev.id);
    const text = el.querySelector(".text");
    if (ev.t === "text") text.textContent += ev.v;
    else if (ev.t === "tool") text.textContent += `\n[${ev.name}(${ev.args})]\n`;
    else if (ev.t === "retry") text.textContent += `\n[retrying: ${ev.reason}]\n`;
    else if (ev.t === "end") { el.dataset.done = "1"; refresh(); }
  });
  events.addEventListener("refresh", () => { refresh(); });
}

document.addEventListener("DOMContentLoaded", () => {
  const body = document.body;
  if (body.dataset.page === "overview") overview();
  if (body.dataset.page === "chat") chat(body);
});
