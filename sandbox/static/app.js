// The sandbox workspace page: renders what the server says one person sees (Block Kit included) and
// sends what they do back as JSON. Plain DOM, no build step. Live updates come from /sandbox/api/events.
"use strict";

const $ = (id) => document.getElementById(id);
const store = {
  get: (key, fallback) => {
    try { const v = localStorage.getItem("qb." + key); return v === null ? fallback : JSON.parse(v); }
    catch (_) { return fallback; }
  },
  set: (key, value) => { try { localStorage.setItem("qb." + key, JSON.stringify(value)); } catch (_) { /* private mode */ } },
};

const S = {
  user: store.get("user", "UOWNER0001"),
  conversation: store.get("conversation", null),
  tab: store.get("tab", "messages"),
  data: null,
  fetching: false,
  again: false,
  modalKey: null,
};

// ---- DOM helpers -------------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "html") node.innerHTML = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function api(path, body) {
  const response = await fetch(path, body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({ ok: false, error: "bad_response" }));
  if (!response.ok && data.ok !== false) data.ok = false;
  return data;
}

function toast(text, kind) {
  const node = el("div", { class: "toast " + (kind || "") }, text);
  $("toasts").append(node);
  setTimeout(() => node.remove(), 6000);
}

// ---- Slack text --------------------------------------------------------------------------------------

const EMOJI = {
  white_check_mark: "✅", heavy_check_mark: "✔️", x: "❌", warning: "⚠️", rotating_light: "🚨",
  hourglass: "⌛", hourglass_flowing_sand: "⏳", eyes: "👀", tada: "🎉", no_entry: "⛔", no_entry_sign: "🚫",
  bell: "🔔", memo: "📝", inbox_tray: "📥", fire: "🔥", red_circle: "🔴", large_green_circle: "🟢",
  large_yellow_circle: "🟡", thumbsup: "👍", "+1": "👍", thumbsdown: "👎", "-1": "👎", clock3: "🕒",
  alarm_clock: "⏰", robot_face: "🤖", pause_button: "⏸️", arrow_forward: "▶️", stop_sign: "🛑",
  information_source: "ℹ️", question: "❓", bulb: "💡", money_with_wings: "💸", lock: "🔒", wave: "👋",
};

function emojify(text) {
  return text.replace(/:([a-z0-9_+\-]+):/g, (whole, name) => EMOJI[name] || whole);
}

// Escape for HTML, keeping the &amp; &lt; &gt; entities Slack already puts in its text.
function escapeHtml(text) {
  return text.replace(/&(?!(amp|lt|gt|quot|#\d+);)/g, "&amp;").replace(/</g, "&lt;")
    .replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

function personName(id) {
  const person = (S.data && S.data.people || []).find((p) => p.id === id);
  if (person) return person.real_name;
  if (S.data && id === S.data.team.bot_user_id) return S.data.team.bot_name;
  return id;
}

function conversationName(id) {
  const found = (S.data && S.data.conversations || []).find((c) => c.id === id);
  return found ? found.name : id;
}

function sequence(inner) {
  const bar = inner.indexOf("|");
  const target = bar < 0 ? inner : inner.slice(0, bar);
  const label = bar < 0 ? null : inner.slice(bar + 1);
  if (target.startsWith("@")) {
    return `<span class="mention">@${escapeHtml(label || personName(target.slice(1)))}</span>`;
  }
  if (target.startsWith("#")) {
    return `<span class="mention">#${escapeHtml(label || conversationName(target.slice(1)))}</span>`;
  }
  if (target.startsWith("!")) {
    const name = target.slice(1).split("^")[0];
    if (["here", "channel", "everyone"].includes(name)) return `<span class="mention">@${name}</span>`;
    return escapeHtml(label || target);
  }
  if (/^(https?:|mailto:)/i.test(target)) {
    return `<a href="${escapeHtml(target)}" target="_blank" rel="noopener">${escapeHtml(label || target)}</a>`;
  }
  return escapeHtml("<" + inner + ">");
}

// Slack's mrkdwn: *bold*, _italic_, ~strike~, `code`, ```blocks```, > quotes, <links|and> <@mentions>.
function mrkdwn(text) {
  const kept = [];
  const keep = (html) => `\u0000${kept.push(html) - 1}\u0000`;
  let s = String(text || "");
  s = s.replace(/```([\s\S]*?)```/g, (_, code) => keep(`<pre>${escapeHtml(code.replace(/^\n/, ""))}</pre>`));
  s = s.replace(/`([^`\n]+)`/g, (_, code) => keep(`<code>${escapeHtml(code)}</code>`));
  s = s.replace(/<([^<>\n]+)>/g, (_, inner) => keep(sequence(inner)));
  s = escapeHtml(s);
  s = s.split("\n").map((line) => (line.startsWith("&gt;") ? keep(
    `<blockquote>${line.replace(/^&gt;\s?/, "")}</blockquote>`) : line)).join("\n");
  const edge = "(^|[\\s(\\[{\"'\\u0000])";
  const end = "(?=$|[\\s.,:;!?)\\]}\"'\\u0000])";
  s = s.replace(new RegExp(edge + "\\*(?!\\s)([^*\\n]+?)\\*" + end, "g"), "$1<b>$2</b>");
  s = s.replace(new RegExp(edge + "_(?!\\s)([^_\\n]+?)_" + end, "g"), "$1<i>$2</i>");
  s = s.replace(new RegExp(edge + "~(?!\\s)([^~\\n]+?)~" + end, "g"), "$1<s>$2</s>");
  s = emojify(s).replace(/\n/g, "<br>");
  for (let i = 0; i < 3 && s.includes("\u0000"); i++) {
    s = s.replace(/\u0000(\d+)\u0000/g, (_, n) => kept[Number(n)]);
  }
  return s.replace(/<\/blockquote><br>/g, "</blockquote>");
}

function textNode(obj, cls) {
  if (!obj) return null;
  if (typeof obj === "string") return el("span", { class: cls, html: mrkdwn(obj) });
  if (obj.type === "mrkdwn") return el("span", { class: cls, html: mrkdwn(obj.text) });
  return el("span", { class: cls }, obj.emoji === false ? obj.text : emojify(obj.text || ""));
}

function plain(obj) {
  return obj ? emojify(obj.text || "") : "";
}

// ---- Block Kit ---------------------------------------------------------------------------------------

// Where a block sits, so its buttons can say where they were clicked.
//   {channel, ts} for a message, {view_id} for the Home tab or a modal; form: true inside a modal.

function optionsOf(element) {
  const options = [...(element.options || [])];
  for (const group of element.option_groups || []) options.push(...(group.options || []));
  return options;
}

function selectElement(element, where, blockId) {
  const select = el("select", {
    class: "bk-select",
    dataset: { blockId, actionId: element.action_id, kind: element.type },
    multiple: element.type.startsWith("multi_"),
  });
  if (!select.multiple) {
    select.append(el("option", { value: "", disabled: true, selected: !element.initial_option },
      plain(element.placeholder) || "Select an item"));
  }
  let options = optionsOf(element);
  if (element.type.includes("users_select")) {
    options = S.data.people.map((p) => ({ text: { text: p.real_name }, value: p.id }));
  } else if (element.type.includes("conversations_select") || element.type.includes("channels_select")) {
    options = S.data.conversations.filter((c) => c.kind === "channel")
      .map((c) => ({ text: { text: "#" + c.name }, value: c.id }));
  }
  const initial = new Set([element.initial_option, ...(element.initial_options || [])]
    .filter(Boolean).map((o) => o.value));
  for (const option of options) {
    select.append(el("option", { value: option.value, selected: initial.has(option.value) }, plain(option.text)));
  }
  if (!where.form) {
    select.addEventListener("change", () => act(element, where, select.value, select));
  }
  return select;
}

function buttonElement(element, where) {
  const style = element.style ? " " + element.style : "";
  const button = el("button", { type: "button", class: "bk-button" + style, dataset: { actionId: element.action_id } },
    plain(element.text));
  button.addEventListener("click", async () => {
    if (/^https?:/i.test(element.url || "")) window.open(element.url, "_blank", "noopener");
    if (element.confirm && !(await confirmDialog(element.confirm))) return;
    act(element, where, element.value, button);
  });
  return button;
}

function overflowElement(element, where) {
  const select = el("select", { class: "bk-overflow", title: "More actions", dataset: { actionId: element.action_id } },
    el("option", { value: "", selected: true, disabled: true }, "⋯"),
    optionsOf(element).map((o) => el("option", { value: o.value }, plain(o.text))));
  select.addEventListener("change", () => act(element, where, select.value, select));
  return select;
}

function dateElement(element, where, blockId) {
  const input = el("input", {
    type: "date", class: "bk-input", value: element.initial_date || "",
    dataset: { blockId, actionId: element.action_id, kind: element.type },
  });
  if (!where.form) input.addEventListener("change", () => act(element, where, input.value, input));
  return input;
}

function choiceElement(element, blockId) {
  const box = el("div", { class: "bk-choices", dataset: { blockId, actionId: element.action_id, kind: element.type } });
  const kind = element.type === "checkboxes" ? "checkbox" : "radio";
  const initial = new Set([element.initial_option, ...(element.initial_options || [])]
    .filter(Boolean).map((o) => o.value));
  for (const option of element.options || []) {
    box.append(el("label", { class: "bk-choice" },
      el("input", { type: kind, name: blockId + "/" + element.action_id, value: option.value, checked: initial.has(option.value) }),
      textNode(option.text)));
  }
  return box;
}

function textInputElement(element, blockId) {
  const attrs = {
    class: "bk-input",
    placeholder: plain(element.placeholder) || null,
    maxlength: element.max_length || null,
    dataset: { blockId, actionId: element.action_id, kind: element.type },
  };
  if (element.multiline) return el("textarea", { ...attrs, rows: 4 }, element.initial_value || "");
  const type = { number_input: "number", email_text_input: "email", url_text_input: "url" }[element.type] || "text";
  return el("input", { ...attrs, type, value: element.initial_value || "" });
}

function element(elem, where, blockId) {
  if (!elem) return null;
  switch (elem.type) {
    case "button": return buttonElement(elem, where);
    case "overflow": return overflowElement(elem, where);
    case "image": return el("img", { class: "bk-accessory-image", src: elem.image_url, alt: elem.alt_text || "" });
    case "datepicker": return dateElement(elem, where, blockId);
    case "checkboxes": case "radio_buttons": return choiceElement(elem, blockId);
    case "plain_text_input": case "number_input": case "email_text_input": case "url_text_input":
      return textInputElement(elem, blockId);
    default:
      if (elem.type && elem.type.endsWith("_select")) return selectElement(elem, where, blockId);
      return el("span", { class: "bk-unsupported" }, `[${elem.type} is not shown in the sandbox]`);
  }
}

function richText(block) {
  const parts = [];
  const walk = (items) => {
    for (const item of items || []) {
      if (item.type === "text") parts.push(item.text);
      else if (item.type === "link") parts.push(`<${item.url}|${item.text || item.url}>`);
      else if (item.type === "user") parts.push(`<@${item.user_id}>`);
      else if (item.type === "channel") parts.push(`<#${item.channel_id}>`);
      else if (item.type === "emoji") parts.push(`:${item.name}:`);
      else if (item.elements) { walk(item.elements); parts.push("\n"); }
    }
  };
  walk(block.elements);
  return el("div", { class: "bk-section-text", html: mrkdwn(parts.join("").trim()) });
}

function renderBlock(block, where, errors) {
  const blockId = block.block_id;
  switch (block.type) {
    case "header":
      return el("div", { class: "bk-header" }, plain(block.text));
    case "section": {
      const body = el("div", { class: "bk-section-body" }, textNode(block.text, "bk-section-text"));
      if (block.fields) {
        body.append(el("div", { class: "bk-fields" }, block.fields.map((f) => textNode(f, "bk-field"))));
      }
      return el("div", { class: "bk-section" }, body,
        block.accessory ? el("div", { class: "bk-accessory" }, element(block.accessory, where, blockId)) : null);
    }
    case "context":
      return el("div", { class: "bk-context" }, (block.elements || []).map((e) => (e.type === "image"
        ? el("img", { class: "bk-context-image", src: e.image_url, alt: e.alt_text || "" })
        : textNode(e))));
    case "divider":
      return el("hr", { class: "bk-divider" });
    case "actions":
      return el("div", { class: "bk-actions" }, (block.elements || []).map((e) => element(e, where, blockId)));
    case "image":
      return el("figure", { class: "bk-image" }, block.title ? el("figcaption", {}, plain(block.title)) : null,
        el("img", { src: block.image_url, alt: block.alt_text || "" }));
    case "input": {
      const error = errors && errors[blockId];
      return el("div", { class: "bk-input-block" + (error ? " has-error" : "") },
        el("label", { class: "bk-label" }, plain(block.label),
          block.optional ? el("span", { class: "bk-optional" }, " (optional)") : null),
        element(block.element, where, blockId),
        block.hint ? el("div", { class: "bk-hint" }, plain(block.hint)) : null,
        error ? el("div", { class: "bk-error", role: "alert" }, error) : null);
    }
    case "rich_text":
      return richText(block);
    case "markdown":
      return el("div", { class: "bk-section-text", html: mrkdwn(block.text) });
    default:
      return el("div", { class: "bk-unsupported" }, `[a ${block.type} block is not shown in the sandbox]`);
  }
}

function renderBlocks(blocks, where, errors) {
  return el("div", { class: "blocks" }, (blocks || []).map((b) => renderBlock(b, where, errors)));
}

// ---- what people do ----------------------------------------------------------------------------------

async function act(elem, where, value, control) {
  if (control) control.disabled = true;
  try {
    const outcome = await api("/sandbox/api/click", {
      user: S.user, action_id: elem.action_id, value: value || null,
      channel: where.channel || null, message_ts: where.ts || null, view_id: where.view_id || null,
    });
    if (!outcome.ok) toast(`queuebot did not take that click (${outcome.error})`, "error");
  } catch (err) {
    toast("The sandbox is not reachable: " + err.message, "error");
  } finally {
    if (control) control.disabled = false;
  }
}

function confirmDialog(confirm) {
  return new Promise((resolve) => {
    const layer = $("confirm-layer");
    const done = (answer) => { layer.hidden = true; layer.replaceChildren(); resolve(answer); };
    const style = confirm.style === "danger" ? " danger" : " primary";
    layer.replaceChildren(el("div", { class: "dialog confirm", role: "alertdialog", "aria-modal": "true" },
      el("header", {}, el("h2", {}, plain(confirm.title) || "Are you sure?")),
      el("div", { class: "dialog-body" }, textNode(confirm.text)),
      el("footer", {},
        el("button", { type: "button", class: "bk-button", onclick: () => done(false) }, plain(confirm.deny) || "Cancel"),
        el("button", { type: "button", class: "bk-button" + style, "data-confirm": "yes", onclick: () => done(true) },
          plain(confirm.confirm) || "Yes"))));
    layer.hidden = false;
    layer.querySelector("[data-confirm]").focus();
  });
}

function formValues(root) {
  const values = {};
  for (const field of root.querySelectorAll("[data-block-id][data-action-id]")) {
    const { blockId, actionId, kind } = field.dataset;
    let value;
    if (kind === "checkboxes") value = [...field.querySelectorAll("input:checked")].map((i) => i.value);
    else if (kind === "radio_buttons") value = (field.querySelector("input:checked") || {}).value || null;
    else if (field.multiple) value = [...field.selectedOptions].map((o) => o.value);
    else value = field.value === "" ? null : field.value;
    (values[blockId] = values[blockId] || {})[actionId] = value;
  }
  return values;
}

function restoreValues(root, values) {
  for (const field of root.querySelectorAll("[data-block-id][data-action-id]")) {
    const value = (values[field.dataset.blockId] || {})[field.dataset.actionId];
    if (value === undefined || value === null) continue;
    if (field.classList.contains("bk-choices")) {
      const chosen = new Set([].concat(value));
      for (const input of field.querySelectorAll("input")) input.checked = chosen.has(input.value);
    } else if (field.multiple) {
      for (const option of field.options) option.selected = value.includes(option.value);
    } else {
      field.value = value;
    }
  }
}

async function sendMessage(text) {
  if (!text.trim()) return;
  const box = $("message-box");
  box.value = "";
  autosize();
  hideSuggestions();
  try {
    const outcome = await api("/sandbox/api/message", { user: S.user, channel: S.conversation, text });
    if (!outcome.ok && outcome.error && !["operation_timeout", "dispatch_failed", "invalid_command"].includes(outcome.error)) {
      toast(`Not sent: ${outcome.error}`, "error");
    }
  } catch (err) {
    box.value = text;
    toast("The sandbox is not reachable: " + err.message, "error");
  }
}

// ---- rendering ---------------------------------------------------------------------------------------

function initials(name) {
  return name.split(/\s+/).map((w) => w[0]).join("").slice(0, 2).toUpperCase();
}

function avatar(sender) {
  if (sender.id === (S.data && S.data.team.bot_user_id)) return el("div", { class: "avatar app" }, "Q");
  if (sender.id === "USLACKBOT") return el("div", { class: "avatar slackbot" }, "S");
  let hue = 0;
  for (const ch of sender.id) hue = (hue * 31 + ch.charCodeAt(0)) % 360;
  return el("div", { class: "avatar", style: `background: hsl(${hue} 45% 45%)` }, initials(sender.name));
}

function clock(ts) {
  return new Date(parseFloat(ts) * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function seenKey(user, conversation) { return `seen.${user}.${conversation}`; }

function unseen(user, conversation) {
  return Math.max(0, conversation.message_count - store.get(seenKey(user, conversation.id), 0));
}

function currentConversation() {
  return S.data.conversations.find((c) => c.id === S.conversation) || S.data.conversations[0];
}

function renderSidebar() {
  const switcher = $("user-switcher");
  switcher.replaceChildren(...S.data.people.map((p) => {
    const waiting = p.id === S.user ? 0 : p.conversations.reduce((n, c) => n + unseen(p.id, c), 0);
    return el("option", { value: p.id, selected: p.id === S.user },
      p.real_name + (waiting ? `  (${waiting} new)` : ""));
  }));
  const me = S.data.people.find((p) => p.id === S.user);
  $("user-title").textContent = me ? me.title : "";
  const item = (c) => {
    const count = unseen(S.user, c);
    const active = c.id === S.conversation;
    const prefix = c.kind === "channel" ? el("span", { class: "hash" }, "#")
      : c.kind === "app" ? el("span", { class: "app-icon" }, "Q") : el("span", { class: "hash" }, "•");
    return el("li", {}, el("a", {
      href: "#", class: "conv" + (active ? " active" : "") + (count && !active ? " unread" : ""),
      dataset: { id: c.id, kind: c.kind },
      onclick: (e) => { e.preventDefault(); openConversation(c.id, c.kind === "app" ? "home" : "messages"); },
    }, prefix, el("span", { class: "conv-name" }, c.name),
    count && !active ? el("span", { class: "count" }, String(count)) : null));
  };
  $("channels").replaceChildren(...S.data.conversations.filter((c) => c.kind === "channel").map(item));
  $("apps").replaceChildren(...S.data.conversations.filter((c) => c.kind === "app").map(item));
  const dms = S.data.conversations.filter((c) => c.kind === "dm");
  $("dm-heading").hidden = dms.length === 0;
  $("dms").replaceChildren(...dms.map(item));
}

function renderMessage(message, previous) {
  const sender = message.sender;
  const grouped = previous && !previous.ephemeral && !message.ephemeral && previous.sender.id === sender.id
    && parseFloat(message.ts) - parseFloat(previous.ts) < 300;
  const where = { channel: S.conversation, ts: message.ts };
  const content = message.blocks && message.blocks.length
    ? renderBlocks(message.blocks, where)
    : el("div", { class: "message-text", html: mrkdwn(message.text) });
  return el("div", {
    class: "message" + (message.ephemeral ? " ephemeral" : "") + (grouped ? " grouped" : ""),
    dataset: { ts: message.ts },
  },
  grouped ? el("div", { class: "gutter-time" }, clock(message.ts)) : avatar(sender),
  el("div", { class: "message-body" },
    grouped ? null : el("div", { class: "meta" },
      el("span", { class: "name" }, sender.name),
      sender.is_app ? el("span", { class: "app-badge" }, "APP") : null,
      el("time", { title: new Date(parseFloat(message.ts) * 1000).toLocaleString() }, clock(message.ts))),
    message.ephemeral ? el("div", { class: "ephemeral-note" }, el("span", { class: "eye" }), "Only visible to you",
      el("a", { href: "#", onclick: (e) => { e.preventDefault(); dismiss(message.ts); } }, "Dismiss")) : null,
    message.typed ? el("div", { class: "typed" }, el("code", {}, message.typed)) : null,
    content,
    message.edited ? el("span", { class: "edited" }, "(edited)") : null));
}

async function dismiss(ts) {
  await api("/sandbox/api/dismiss", { user: S.user, channel: S.conversation, ts });
}

function renderConversation() {
  const conversation = currentConversation();
  S.conversation = conversation.id;
  const isApp = conversation.kind === "app";
  const showHome = isApp && S.tab === "home";
  $("conversation-title").replaceChildren(el("span", {},
    conversation.kind === "channel" ? el("span", { class: "hash" }, "#") : null,
    conversation.name,
    isApp ? el("span", { class: "app-badge" }, "APP") : null));
  $("tabs").hidden = !isApp;
  for (const tab of $("tabs").querySelectorAll("button")) {
    tab.classList.toggle("active", tab.dataset.tab === (showHome ? "home" : "messages"));
    tab.setAttribute("aria-selected", String(tab.dataset.tab === (showHome ? "home" : "messages")));
  }
  $("messages").hidden = showHome;
  $("composer").hidden = showHome;
  $("home").hidden = !showHome;
  $("message-box").placeholder = isApp ? `Message ${conversation.name}` : `Message #${conversation.name}`;

  if (showHome) {
    const home = S.data.home;
    $("home").replaceChildren(home
      ? renderBlocks(home.blocks, { view_id: home.id })
      : el("div", { class: "empty" }, "Opening the Home tab… queuebot publishes it when you open it."));
    return;
  }
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 60;
  const changedConversation = list.dataset.conversation !== conversation.id;
  const items = S.data.conversation.messages;
  const nodes = items.map((m, i) => renderMessage(m, items[i - 1]));
  if (!nodes.length) {
    nodes.push(el("div", { class: "empty" }, conversation.kind === "channel"
      ? `This is the very beginning of #${conversation.name}. Type /queue help to start.`
      : "queuebot writes to you here: escalations, and notes about your jobs."));
  }
  const top = list.scrollTop;
  list.replaceChildren(el("div", { class: "spacer" }), ...nodes);
  list.dataset.conversation = conversation.id;
  list.scrollTop = atBottom || changedConversation ? list.scrollHeight : top;
  store.set(seenKey(S.user, conversation.id), conversation.message_count);
}

function renderModal() {
  const modal = S.data.modal;
  const layer = $("modal-layer");
  const key = modal ? `${modal.id}:${modal.hash}:${JSON.stringify(modal.errors)}` : null;
  if (key === S.modalKey) return;
  const kept = layer.querySelector(".dialog") && modal && layer.dataset.viewId === modal.id
    ? formValues(layer) : null;
  S.modalKey = key;
  if (!modal) { layer.hidden = true; layer.replaceChildren(); delete layer.dataset.viewId; return; }
  const form = el("form", { class: "dialog modal", role: "dialog", "aria-modal": "true", "aria-label": plain(modal.title) },
    el("header", {},
      el("h2", {}, plain(modal.title)),
      el("button", { type: "button", class: "icon-button", "aria-label": "Close", onclick: () => closeModal(modal.id) }, "×")),
    el("div", { class: "dialog-body" }, renderBlocks(modal.blocks, { view_id: modal.id, form: true }, modal.errors)),
    el("div", { class: "dialog-error", hidden: true }),
    el("footer", {},
      el("button", { type: "button", class: "bk-button", onclick: () => closeModal(modal.id) }, plain(modal.close) || "Cancel"),
      modal.submit ? el("button", { type: "submit", class: "bk-button primary" }, plain(modal.submit)) : null));
  form.addEventListener("submit", (e) => { e.preventDefault(); submitModal(modal.id, form); });
  layer.replaceChildren(form);
  layer.dataset.viewId = modal.id;
  layer.hidden = false;
  if (kept) restoreValues(layer, kept);
  const first = form.querySelector(".has-error .bk-input, .bk-input, select, textarea");
  if (first) first.focus();
}

async function submitModal(viewId, form) {
  const submit = form.querySelector("button[type=submit]");
  if (submit) submit.disabled = true;
  const banner = form.querySelector(".dialog-error");
  banner.hidden = true;
  try {
    const outcome = await api("/sandbox/api/submit", { user: S.user, view_id: viewId, values: formValues(form) });
    if (!outcome.ok) {
      banner.textContent = `We had some trouble connecting to queuebot (${outcome.error}). Try again?`;
      banner.hidden = false;
    }
  } finally {
    if (submit) submit.disabled = false;
  }
}

async function closeModal(viewId) {
  await api("/sandbox/api/close", { user: S.user, view_id: viewId });
}

function render() {
  renderSidebar();
  renderConversation();
  renderModal();
  store.set("conversation", S.conversation);
  store.set("tab", S.tab);
}

// ---- state -------------------------------------------------------------------------------------------

async function refresh() {
  if (S.fetching) { S.again = true; return; }
  S.fetching = true;
  try {
    const query = new URLSearchParams({ user: S.user });
    if (S.conversation) query.set("conversation", S.conversation);
    let data = await api("/sandbox/api/state?" + query);
    if (data.ok === false && S.conversation) {  // a conversation of another user, or one that is gone
      S.conversation = null;
      data = await api("/sandbox/api/state?" + new URLSearchParams({ user: S.user }));
    }
    if (data.ok === false) {
      if (data.error === "user_not_found" && S.user !== "UOWNER0001") { S.user = "UOWNER0001"; S.again = true; }
      else toast("The sandbox said: " + data.error, "error");
      return;
    }
    S.data = data;
    S.conversation = data.conversation.id;
    render();
  } catch (err) {
    $("live").textContent = "offline";
    $("live").className = "live off";
  } finally {
    S.fetching = false;
    if (S.again) { S.again = false; refresh(); }
  }
}

function openConversation(id, tab) {
  S.conversation = id;
  S.tab = tab || "messages";
  const kind = (S.data.conversations.find((c) => c.id === id) || {}).kind;
  if (kind === "app") api("/sandbox/api/app", { user: S.user, tab: S.tab });
  $("messages").dataset.conversation = "";
  refresh();
  if (S.tab === "messages") $("message-box").focus();
}

function switchUser(user) {
  S.user = user;
  store.set("user", user);
  S.modalKey = null;
  const conversation = S.data && S.data.conversations.find((c) => c.id === S.conversation);
  // Each person has their own DM with the app ("app" names it): follow it across the switch.
  if (conversation && conversation.kind !== "channel") S.conversation = "app";
  if (conversation && conversation.kind === "app" && S.tab === "home") api("/sandbox/api/app", { user, tab: "home" });
  refresh();
}

function listen() {
  const events = new EventSource("/sandbox/api/events");
  events.onopen = () => { $("live").textContent = "live"; $("live").className = "live on"; };
  events.onmessage = () => refresh();
  events.onerror = () => { $("live").textContent = "reconnecting…"; $("live").className = "live off"; };
}

// ---- the message box ---------------------------------------------------------------------------------

const SUGGESTIONS = [
  ["/queue add demo.ask question=\"Ship it?\"", "a job that asks a decision"],
  ["/queue add demo.review text=\"Dear customer…\"", "a draft for review"],
  ["/queue add demo.triage", "a job missing its input (pending, then escalated)"],
  ["/queue new", "a form for any job type"],
  ["/queue list", "what is queued"],
  ["/queue stats", "counts by state, SLA breaches"],
  ["/queue help", "every command"],
];

function hideSuggestions() { $("suggestions").hidden = true; }

function showSuggestions() {
  const text = $("message-box").value;
  const matches = text.startsWith("/") && !text.includes("\n")
    ? SUGGESTIONS.filter(([command]) => command.startsWith(text) && command !== text) : [];
  if (!matches.length) { hideSuggestions(); return; }
  $("suggestions").replaceChildren(...matches.map(([command, what]) => el("li", {},
    el("button", { type: "button", onclick: () => { $("message-box").value = command; hideSuggestions(); $("message-box").focus(); } },
      el("code", {}, command), el("span", {}, what)))));
  $("suggestions").hidden = false;
}

function autosize() {
  const box = $("message-box");
  box.style.height = "auto";
  box.style.height = Math.min(box.scrollHeight, 200) + "px";
}

function setUp() {
  $("composer").addEventListener("submit", (e) => { e.preventDefault(); sendMessage($("message-box").value); });
  $("message-box").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); sendMessage($("message-box").value); }
    if (e.key === "Escape") hideSuggestions();
  });
  $("message-box").addEventListener("input", () => { autosize(); showSuggestions(); });
  $("user-switcher").addEventListener("change", (e) => switchUser(e.target.value));
  for (const tab of $("tabs").querySelectorAll("button")) {
    tab.addEventListener("click", () => openConversation(S.conversation, tab.dataset.tab));
  }
  const guide = (open) => { document.body.classList.toggle("guide-hidden", !open); store.set("guide", open); };
  guide(store.get("guide", true));
  $("guide-close").addEventListener("click", () => guide(false));
  $("guide-toggle").addEventListener("click", () => guide(document.body.classList.contains("guide-hidden")));
  for (const link of document.querySelectorAll("[data-goto]")) {
    link.addEventListener("click", (e) => {
      e.preventDefault();
      const target = S.data && S.data.conversations.find((c) => c.name === link.dataset.goto || c.kind === link.dataset.goto);
      if (target) openConversation(target.id, target.kind === "app" ? "home" : "messages");
    });
  }
  for (const code of document.querySelectorAll("code.try")) {
    code.title = "Put it in the message box";
    code.addEventListener("click", () => { $("message-box").value = code.textContent; autosize(); $("message-box").focus(); });
  }
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && S.data && S.data.modal && $("confirm-layer").hidden) closeModal(S.data.modal.id);
  });
  refresh().then(() => {
    if (S.data && currentConversation().kind === "app" && S.tab === "home") api("/sandbox/api/app", { user: S.user, tab: "home" });
  });
  listen();
}

setUp();
