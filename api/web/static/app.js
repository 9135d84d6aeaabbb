// The chat page: sign in, conversations, turns streamed with Markdown, stop, regenerate and sibling answers,
// files with their ingestion progress, citations and tool calls. Plain DOM, no framework.

import { Problem, call, get, newIdempotencyKey, patch, post } from "./api.js";
import { renderMarkdown } from "./markdown.js";
import { followRun } from "./stream.js";

const $ = (id) => document.getElementById(id);
const TITLE_CHARS = 60;
const PAGE = 100;
const FILE_POLL_MS = 400;
const STORED_TURN_PATIENCE_MS = 15000;
const WORKSPACE_KEY = "turnlog.workspace";
const TERMINAL_STATE = { "assistant.completed": "completed", "run.cancelled": "cancelled", "run.failed": "failed" };
const ROOT = 0; // the parent key of a conversation's first turn

const state = {
  principal: null,
  workspaceId: null,
  conversations: [],
  nextBefore: null,
  conversationId: null,
  title: "",
  turns: new Map(), // turnSeq -> turn, as GET .../turns has it
  chosen: new Map(), // parent turnSeq -> the child shown (sibling answers)
  live: null, // the run in progress: { runId, turnSeq, text, tools, note, connection, follower, cancelling }
  attachments: [], // files for the next turn: { key, fileId, filename, state, progress, failureReason }
  sending: false,
};

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// An element with attributes (null and false leave one out) and children (strings become text, never HTML).
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

// --- problems and status -------------------------------------------------------------------------------

function showProblem(problem, what) {
  if (problem instanceof Problem && problem.status === 401) {
    showSignIn(problem.detail);
    return;
  }
  const detail = problem instanceof Problem ? problem.detail : String(problem && problem.message ? problem.message : problem);
  const title = what || (problem instanceof Problem ? problem.title : "Error");
  const box = el("div", { class: "problem", role: "alert" },
    el("strong", {}, `${title}: `), el("span", { class: "problem-detail" }, detail),
    el("button", { type: "button", class: "quiet dismiss", "aria-label": "Dismiss", onclick: () => box.remove() }, "×"));
  const problems = $("problems");
  problems.append(box);
  while (problems.children.length > 3) problems.firstElementChild.remove();
}

function clearProblems() {
  $("problems").replaceChildren();
}

function setStatus(text) {
  $("status").textContent = text;
}

// --- signing in and out --------------------------------------------------------------------------------

function showSignIn(message) {
  closeLive();
  $("app").hidden = true;
  $("signin").hidden = false;
  const error = $("signin-error");
  error.hidden = !message;
  error.textContent = message || "";
  $("signin-token").focus();
}

async function signIn(event) {
  event.preventDefault();
  const token = $("signin-token").value.trim();
  if (!token) return;
  try {
    state.principal = await call("POST", "/v1/sessions", { headers: { Authorization: `Bearer ${token}` } });
  } catch (problem) {
    const error = $("signin-error");
    error.hidden = false;
    error.textContent = problem instanceof Problem ? problem.detail : String(problem);
    return;
  }
  $("signin-token").value = "";
  await showApp();
}

async function signOut() {
  try {
    await call("DELETE", "/v1/sessions/current");
  } catch (problem) {
    showProblem(problem, "Could not sign out");
    return;
  }
  state.principal = null;
  showSignIn("You are signed out.");
}

// --- the app -------------------------------------------------------------------------------------------

async function showApp() {
  $("signin").hidden = true;
  $("app").hidden = false;
  const { userId, orgId, workspaceIds } = state.principal;
  $("whoami").textContent = `${userId} · ${orgId}`;
  const remembered = localStorage.getItem(WORKSPACE_KEY);
  state.workspaceId = workspaceIds.includes(remembered) ? remembered : workspaceIds[0];
  $("workspace").replaceChildren(...workspaceIds.map((id) => el("option", { value: id, selected: id === state.workspaceId }, id)));
  $("workspace").disabled = workspaceIds.length < 2;
  await loadConversations();
  // What went wrong while the page opened (the list, an upload started meanwhile) stays shown.
  await openConversation(conversationInLocation(), { keepProblems: true });
}

function conversationInLocation() {
  const id = decodeURIComponent(location.hash.slice(1));
  return /^[A-Za-z0-9_-]{1,64}$/.test(id) ? id : null;
}

async function changeWorkspace() {
  state.workspaceId = $("workspace").value;
  localStorage.setItem(WORKSPACE_KEY, state.workspaceId);
  history.pushState(null, "", location.pathname);
  clearProblems();
  await loadConversations();
  await openConversation(null, { keepProblems: true }); // a failed list of the new workspace stays shown
}

async function loadConversations({ more = false } = {}) {
  const workspaceId = state.workspaceId;
  const query = new URLSearchParams({ workspaceId, limit: "30" });
  if (more && state.nextBefore) query.set("before", state.nextBefore);
  try {
    const page = await get(`/v1/conversations?${query}`);
    if (state.workspaceId !== workspaceId) return; // another workspace was chosen meanwhile: its own load lists it
    if (more) {
      state.conversations = [...state.conversations, ...page.conversations];
    } else {
      // A conversation started while the list was on its way is not in it: keep it on top rather than drop it.
      const listed = new Set(page.conversations.map((item) => item.conversationId));
      const startedMeanwhile = state.conversations.filter(
        (item) => item.startedHere && item.workspaceId === workspaceId && !listed.has(item.conversationId));
      state.conversations = [...startedMeanwhile, ...page.conversations];
    }
    state.nextBefore = page.nextBefore;
  } catch (problem) {
    showProblem(problem, "Could not list the conversations");
  }
  renderConversations();
}

function renderConversations() {
  const items = state.conversations.map((conversation) => el("li", {},
    el("a", {
      href: `#${conversation.conversationId}`,
      "aria-current": conversation.conversationId === state.conversationId ? "page" : null,
    }, conversation.title || "Untitled")));
  $("conversations").replaceChildren(...items);
  $("more-conversations").hidden = !state.nextBefore;
}

function closeLive() {
  if (state.live) state.live.follower.close();
  state.live = null;
}

async function openConversation(conversationId, { keepProblems = false } = {}) {
  closeLive();
  if (!keepProblems) clearProblems();
  state.conversationId = conversationId;
  state.turns = new Map();
  state.chosen = new Map();
  state.title = "";
  setStatus("");
  if (conversationId) {
    try {
      const conversation = await get(`/v1/conversations/${encodeURIComponent(conversationId)}`);
      state.title = conversation.title || "Untitled";
      if (conversation.workspaceId !== state.workspaceId && state.principal.workspaceIds.includes(conversation.workspaceId)) {
        state.workspaceId = conversation.workspaceId;
        $("workspace").value = conversation.workspaceId;
        await loadConversations();
      }
      await loadTurns(conversationId);
    } catch (problem) {
      showProblem(problem, "Could not open the conversation");
      state.conversationId = null;
    }
  }
  if (state.conversationId !== conversationId) return;
  $("conversation-title").textContent = state.title || "New chat";
  $("rename").hidden = !state.conversationId;
  $("rename-form").hidden = true;
  renderConversations();
  renderMessages();
  const running = [...state.turns.values()].find((turn) => turn.role === "assistant" && turn.state === "in_progress" && turn.runId);
  if (running) follow(running.runId, running.turnSeq); // a reload mid-answer picks the stream up again
  updateComposer();
}

async function loadTurns(conversationId) {
  let afterSeq = 0;
  for (;;) {
    const page = await get(`/v1/conversations/${encodeURIComponent(conversationId)}/turns?afterSeq=${afterSeq}&limit=${PAGE}`);
    for (const turn of page.turns) state.turns.set(turn.turnSeq, turn);
    if (page.nextAfterSeq === null || page.nextAfterSeq === undefined) return;
    afterSeq = page.nextAfterSeq;
  }
}

// --- the thread: turns down the chosen branch ----------------------------------------------------------

function thread() {
  const children = new Map();
  for (const turn of [...state.turns.values()].sort((a, b) => a.turnSeq - b.turnSeq)) {
    const parent = turn.parentTurnSeq ?? ROOT;
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(turn);
  }
  const steps = [];
  const seen = new Set();
  let parent = ROOT;
  while (children.has(parent)) {
    const siblings = children.get(parent);
    const turn = siblings.find((sibling) => sibling.turnSeq === state.chosen.get(parent)) ?? siblings[siblings.length - 1];
    if (seen.has(turn.turnSeq)) break;
    seen.add(turn.turnSeq);
    steps.push({ parent, turn, siblings });
    parent = turn.turnSeq;
  }
  return steps;
}

function latestUserTurnSeq() {
  let latest = null;
  for (const turn of state.turns.values()) if (turn.role === "user" && (latest === null || turn.turnSeq > latest)) latest = turn.turnSeq;
  return latest;
}

function textOf(turn) {
  return (turn.content || []).filter((part) => part.type === "text").map((part) => part.text).join("");
}

// `focus`: selectors of what to focus once drawn, the first that can be (a disabled button cannot); by default
// whatever had focus among the messages keeps it (a redraw replaces the elements).
function renderMessages(focus = focusedInMessages()) {
  const steps = thread();
  const items = steps.map((step, index) => (step.turn.role === "user"
    ? userTurnElement(step)
    : assistantTurnElement(step, index === steps.length - 1)));
  $("messages").replaceChildren(...items);
  for (const selector of focus) {
    const target = document.querySelector(selector);
    if (target && !target.disabled) {
      target.focus();
      break;
    }
  }
}

// A selector that finds the focused control again in the redrawn messages: its turn and its classes.
function focusedInMessages() {
  const focused = document.activeElement;
  const turn = focused && focused !== document.body && $("messages").contains(focused) ? focused.closest("[data-turn-seq]") : null;
  if (!turn || !focused.classList.length) return [];
  return [`[data-turn-seq="${turn.dataset.turnSeq}"] ${focused.localName}.${[...focused.classList].map((name) => CSS.escape(name)).join(".")}`];
}

function siblingSwitcher(step) {
  if (step.siblings.length < 2) return null;
  const index = step.siblings.indexOf(step.turn);
  const choose = (offset) => () => {
    state.chosen.set(step.parent, step.siblings[index + offset].turnSeq);
    const target = step.siblings[index + offset].turnSeq;
    const [same, other] = offset < 0 ? ["previous", "next"] : ["next", "previous"];
    renderMessages([`[data-turn-seq="${target}"] .sibling-${same}`, `[data-turn-seq="${target}"] .sibling-${other}`]);
  };
  const noun = step.turn.role === "user" ? "message" : "answer";
  return el("div", { class: "siblings", role: "group", "aria-label": `${noun}s to this turn` },
    el("button", { type: "button", class: "quiet sibling-previous", "aria-label": `Previous ${noun}`, disabled: index === 0, onclick: choose(-1) }, "‹"),
    el("span", { class: "sibling-position" }, `${index + 1} / ${step.siblings.length}`),
    el("button", { type: "button", class: "quiet sibling-next", "aria-label": `Next ${noun}`, disabled: index === step.siblings.length - 1, onclick: choose(1) }, "›"));
}

function userTurnElement(step) {
  return el("li", { class: "turn user", "data-turn-seq": step.turn.turnSeq },
    el("div", { class: "speaker" }, "You"),
    el("div", { class: "user-text" }, textOf(step.turn)),
    siblingSwitcher(step));
}

function assistantTurnElement(step, last) {
  const { turn } = step;
  const live = state.live && state.live.runId === turn.runId ? state.live : null;
  const status = live ? "in_progress" : turn.state;
  const item = el("li", { class: "turn assistant", "data-turn-seq": turn.turnSeq, "data-run-id": turn.runId, "data-state": status, "aria-busy": live ? "true" : "false" },
    el("div", { class: "speaker" }, "Assistant"));
  const calls = live ? [...live.tools.values()] : (turn.toolCalls || []);
  if (calls.length) item.append(el("ul", { class: "tool-calls", "aria-label": "Tool calls" }, calls.map((toolCall) => toolCard(turn.runId, toolCall, live))));
  const answer = el("div", { class: "answer markdown" });
  renderMarkdown(answer, live ? live.text : textOf(turn));
  item.append(answer);
  if (live && live.note) item.append(el("p", { class: "note" }, live.note));
  if (live && live.connection === "reconnecting") item.append(el("p", { class: "note reconnecting" }, "Connection lost: reconnecting…"));
  if (status === "in_progress" && !(live && live.text)) answer.append(el("span", { class: "thinking" }, "Thinking…"));
  if (status === "cancelled") item.append(el("p", { class: "badge" }, "Stopped"));
  if (status === "failed") item.append(el("p", { class: "badge failed" }, `Failed${turn.reason ? `: ${turn.reason}` : ""}`));
  if (turn.citations && turn.citations.length) item.append(citationList(turn.citations));
  const footer = el("div", { class: "turn-footer" }, siblingSwitcher(step));
  const canRegenerate = last && !state.live && !turn.settling && status !== "in_progress" && turn.parentTurnSeq === latestUserTurnSeq();
  if (canRegenerate) footer.append(el("button", { type: "button", class: "quiet regenerate", onclick: regenerate }, "Regenerate"));
  item.append(footer);
  return item;
}

function citationList(citations) {
  return el("ul", { class: "citations", "aria-label": "Sources cited" }, citations.map((citation) => {
    const where = [citation.title, citation.location !== citation.title ? citation.location : null].filter(Boolean).join(" · ");
    return el("li", {},
      el("details", { class: "citation" },
        el("summary", {}, el("span", { class: "marker" }, `[${citation.marker}]`), " ", citation.title || "Source"),
        el("div", { class: "citation-body" },
          el("blockquote", {}, citation.quote || "(no quote)"),
          el("p", { class: "where" }, where || citation.sourceId))));
  }));
}

const TOOL_STATUS_TEXT = {
  proposed: "running", running: "running", awaiting_approval: "waits for your approval", approving: "approving…",
  declining: "declining…", completed: "done",
};

function toolCard(runId, toolCall, live) {
  const status = toolCall.status || "running";
  const card = el("li", { class: "tool-card", "data-call-id": toolCall.callId, "data-status": status },
    el("div", { class: "tool-head" },
      el("strong", { class: "tool-name" }, toolCall.toolName || "tool"),
      el("span", { class: "tool-status" }, TOOL_STATUS_TEXT[status] || status.replaceAll("_", " "))));
  if (toolCall.arguments) card.append(el("pre", { class: "tool-arguments" }, toolCall.arguments));
  if (live && status === "awaiting_approval") {
    const decide = (approve) => async () => {
      toolCall.status = approve ? "approving" : "declining";
      renderMessages();
      try {
        await post(`/v1/runs/${encodeURIComponent(runId)}/tool-calls/${encodeURIComponent(toolCall.callId)}/approval`, { approve });
        if (toolCall.status === "approving" || toolCall.status === "declining") toolCall.status = approve ? "running" : "declined";
      } catch (problem) {
        toolCall.status = "awaiting_approval";
        showProblem(problem, `Could not ${approve ? "approve" : "decline"} ${toolCall.toolName}`);
      }
      renderMessages();
    };
    card.append(el("div", { class: "tool-approval", role: "group", "aria-label": `Approve or decline ${toolCall.toolName}` },
      el("span", {}, "This call waits for your approval."),
      el("button", { type: "button", class: "primary approve", onclick: decide(true) }, "Approve"),
      el("button", { type: "button", class: "decline", onclick: decide(false) }, "Decline")));
  }
  return card;
}

// --- runs ----------------------------------------------------------------------------------------------

function follow(runId, turnSeq) {
  closeLive();
  const live = { runId, turnSeq, text: "", tools: new Map(), note: "", connection: "connecting", cancelling: false, follower: null };
  state.live = live;
  let scheduled = false;
  const redrawAnswer = () => {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      const answer = document.querySelector(`[data-turn-seq="${live.turnSeq}"] .answer`);
      if (answer && state.live === live) renderMarkdown(answer, live.text);
    });
  };
  live.follower = followRun(runId, {
    onEvent: (type, data) => {
      if (state.live !== live) return;
      switch (type) {
        case "run.started":
          live.turnSeq = data.turnSeq;
          break;
        case "assistant.delta":
          live.text += data.text;
          redrawAnswer();
          return;
        case "tool.call": {
          const known = live.tools.get(data.callId);
          live.tools.set(data.callId, { ...known, callId: data.callId, toolName: data.toolName, arguments: data.arguments ?? known?.arguments, status: known?.status || "running" });
          break;
        }
        case "tool.approval_required":
          live.tools.set(data.callId, { ...live.tools.get(data.callId), callId: data.callId, toolName: data.toolName, arguments: data.arguments, status: "awaiting_approval" });
          setStatus(`${data.toolName} waits for your approval`);
          break;
        case "tool.result":
          live.tools.set(data.callId, { ...live.tools.get(data.callId), callId: data.callId, toolName: data.toolName ?? live.tools.get(data.callId)?.toolName, status: data.status, durationMs: data.durationMs });
          break;
        case "run.backgrounded":
          live.note = `Working in the background: ${data.reason}`;
          break;
        case "safety.stopped":
          live.note = `Stopped by a safety policy: ${data.reason}`;
          break;
        default:
          if (type in TERMINAL_STATE) {
            finish(live, type, data);
            return;
          }
      }
      renderMessages();
    },
    onConnection: (connection) => {
      if (state.live !== live || live.connection === connection) return;
      live.connection = connection;
      setStatus(connection === "reconnecting" ? "Connection lost: reconnecting…" : "");
      renderMessages();
    },
    onFailure: (problem) => {
      if (state.live !== live) return;
      state.live = null;
      showProblem(problem, "Could not follow the answer");
      renderMessages();
      updateComposer();
    },
  });
  renderMessages();
  updateComposer();
}

async function finish(live, type, data) {
  const turnState = TERMINAL_STATE[type];
  const turn = state.turns.get(live.turnSeq) || { turnSeq: live.turnSeq, role: "assistant", runId: live.runId, parentTurnSeq: latestUserTurnSeq() };
  // What streamed is the answer, unless a safety stage replaced it: then the stored text is.
  turn.content = [{ type: "text", text: data.replaced ? data.text : live.text }];
  turn.state = turnState;
  turn.reason = data.reason;
  turn.toolCalls = [...live.tools.values()];
  // Regenerate waits until the stored turn is read: that read re-renders the turn, and a button replaced between
  // mouse-down and mouse-up would swallow the click.
  turn.settling = true;
  state.turns.set(turn.turnSeq, turn);
  state.live = null;
  setStatus({ completed: "Answer complete.", cancelled: "Stopped.", failed: `The answer failed${data.reason ? `: ${data.reason}` : ""}.` }[turnState]);
  renderMessages();
  updateComposer();
  const conversationId = state.conversationId;
  const stored = await storedTurn(conversationId, turn.turnSeq);
  delete turn.settling;
  if (state.conversationId !== conversationId) return;
  if (!stored) {
    renderMessages();
    return;
  }
  // The stored calls are the tool loop's; a document search streamed as a call too, and stays shown.
  const streamed = new Map(turn.toolCalls.map((toolCall) => [toolCall.callId, toolCall]));
  const storedCalls = (stored.toolCalls || []).map((toolCall) => ({ ...toolCall, arguments: streamed.get(toolCall.callId)?.arguments }));
  const storedIds = new Set(storedCalls.map((toolCall) => toolCall.callId));
  Object.assign(turn, {
    citations: stored.citations, sources: stored.sources, reason: stored.reason, state: stored.state,
    toolCalls: [...turn.toolCalls.filter((toolCall) => !storedIds.has(toolCall.callId)), ...storedCalls],
  });
  renderMessages();
}

// The finished turn as stored (its citations, tool calls, reason); the read model may take a moment to show it ended.
async function storedTurn(conversationId, turnSeq) {
  const deadline = Date.now() + STORED_TURN_PATIENCE_MS;
  while (Date.now() < deadline) {
    try {
      const page = await get(`/v1/conversations/${encodeURIComponent(conversationId)}/turns?afterSeq=${turnSeq - 1}&limit=1`);
      const turn = page.turns.find((candidate) => candidate.turnSeq === turnSeq);
      if (turn && turn.state !== "in_progress") return turn;
    } catch (problem) {
      showProblem(problem, "Could not read the finished answer");
      return null;
    }
    await sleep(200);
  }
  return null;
}

async function stopRun() {
  const live = state.live;
  if (!live || live.cancelling) return;
  live.cancelling = true;
  updateComposer();
  try {
    await post(`/v1/runs/${encodeURIComponent(live.runId)}/cancel`);
    setStatus("Stopping…");
  } catch (problem) {
    live.cancelling = false;
    showProblem(problem, "Could not stop the answer");
    updateComposer();
  }
}

async function regenerate() {
  if (state.live || !state.conversationId) return;
  clearProblems();
  try {
    const accepted = await post(`/v1/conversations/${encodeURIComponent(state.conversationId)}/regenerate`, {}, { "Idempotency-Key": newIdempotencyKey() });
    const parent = latestUserTurnSeq();
    state.turns.set(accepted.turnSeq, { turnSeq: accepted.turnSeq, role: "assistant", state: "in_progress", content: [], parentTurnSeq: parent, runId: accepted.runId, citations: [] });
    state.chosen.delete(parent);
    follow(accepted.runId, accepted.turnSeq);
  } catch (problem) {
    showProblem(problem, "Could not regenerate the answer");
  }
}

// --- sending a turn ------------------------------------------------------------------------------------

async function send(event) {
  event.preventDefault();
  const question = $("question");
  const text = question.value.trim();
  if (!text || state.live || state.sending) return;
  if (state.attachments.some((file) => file.state !== "indexed")) {
    setStatus("Wait until every attached file is indexed, or remove it.");
    return;
  }
  clearProblems();
  state.sending = true;
  updateComposer();
  try {
    if (!state.conversationId) await createConversation(text);
    const body = { input: [{ type: "text", text }] };
    const attachments = state.attachments.map((file) => file.fileId);
    if (attachments.length) body.attachments = attachments;
    const accepted = await post(`/v1/conversations/${encodeURIComponent(state.conversationId)}/turns`, body, { "Idempotency-Key": newIdempotencyKey() });
    const latest = Math.max(ROOT, ...state.turns.keys());
    state.turns.set(accepted.turnSeq, { turnSeq: accepted.turnSeq, role: "user", state: "completed", content: body.input, parentTurnSeq: latest || null });
    state.turns.set(accepted.turnSeq + 1, { turnSeq: accepted.turnSeq + 1, role: "assistant", state: "in_progress", content: [], parentTurnSeq: accepted.turnSeq, runId: accepted.runId, citations: [] });
    state.chosen.clear();
    question.value = "";
    state.attachments = [];
    renderAttachments();
    follow(accepted.runId, accepted.turnSeq + 1);
  } catch (problem) {
    showProblem(problem, "Could not send the message");
  } finally {
    state.sending = false;
    updateComposer();
  }
}

async function createConversation(firstMessage) {
  const title = firstMessage.length > TITLE_CHARS ? `${firstMessage.slice(0, TITLE_CHARS - 1)}…` : firstMessage;
  const created = await post("/v1/conversations", { workspaceId: state.workspaceId, title });
  state.conversationId = created.conversationId;
  state.title = title;
  state.conversations.unshift({
    conversationId: created.conversationId, workspaceId: state.workspaceId, title, createdAt: created.createdAt, startedHere: true,
  });
  // Mark the address without reopening: a reload comes back here.
  history.pushState(null, "", `#${created.conversationId}`);
  $("conversation-title").textContent = title;
  $("rename").hidden = false;
  renderConversations();
}

function updateComposer() {
  const live = state.live;
  $("stop").hidden = !live;
  $("stop").disabled = !live || live.cancelling;
  $("stop").textContent = live && live.cancelling ? "Stopping…" : "Stop";
  $("send").disabled = Boolean(live) || state.sending;
}

// --- files ---------------------------------------------------------------------------------------------

function renderAttachments() {
  const items = state.attachments.map((file) => {
    const { chunksTotal = 0, chunksIndexed = 0 } = file.progress || {};
    const label = file.state === "indexing" && chunksTotal ? `indexing ${chunksIndexed}/${chunksTotal}` : file.state;
    return el("li", { class: "attachment", "data-state": file.state, "data-file-id": file.fileId },
      el("span", { class: "attachment-name" }, file.filename),
      el("span", { class: "attachment-state" }, file.state === "failed" ? `failed: ${file.failureReason || "unreadable"}` : label),
      file.state === "indexed" || file.state === "failed" ? null
        : el("progress", { max: chunksTotal || 1, value: file.state === "indexing" ? chunksIndexed : null, "aria-label": `Progress of ${file.filename}` }),
      el("button", { type: "button", class: "quiet remove", "aria-label": `Remove ${file.filename}`, onclick: () => removeAttachment(file) }, "×"));
  });
  $("attachments").replaceChildren(...items);
}

function removeAttachment(file) {
  state.attachments = state.attachments.filter((attached) => attached !== file);
  renderAttachments();
}

async function attachFiles() {
  const input = $("file-input");
  const files = [...input.files];
  input.value = "";
  await Promise.all(files.map(upload));
}

async function upload(file) {
  const attached = { key: newIdempotencyKey(), fileId: null, filename: file.name, state: "uploading", progress: null };
  state.attachments.push(attached);
  renderAttachments();
  const form = new FormData();
  form.append("workspaceId", state.workspaceId);
  form.append("file", file, file.name);
  try {
    Object.assign(attached, fileState(await call("POST", "/v1/files", { form })));
  } catch (problem) {
    removeAttachment(attached);
    showProblem(problem, `Could not upload ${file.name}`);
    return;
  }
  renderAttachments();
  while (state.attachments.includes(attached) && attached.state !== "indexed" && attached.state !== "failed") {
    await sleep(FILE_POLL_MS);
    try {
      Object.assign(attached, fileState(await get(`/v1/files/${encodeURIComponent(attached.fileId)}`)));
    } catch (problem) {
      removeAttachment(attached);
      showProblem(problem, `Could not follow ${file.name}`);
      return;
    }
    renderAttachments();
  }
}

function fileState(file) {
  return { fileId: file.fileId, state: file.ingestionState, progress: file.progress, failureReason: file.failureReason };
}

// --- renaming ------------------------------------------------------------------------------------------

function startRename() {
  $("rename-input").value = state.title === "Untitled" ? "" : state.title;
  $("conversation-title").hidden = true;
  $("rename").hidden = true;
  $("rename-form").hidden = false;
  $("rename-input").focus();
}

function endRename() {
  $("rename-form").hidden = true;
  $("conversation-title").hidden = false;
  $("rename").hidden = !state.conversationId;
}

async function saveRename(event) {
  event.preventDefault();
  const conversationId = state.conversationId;
  if (!conversationId) return endRename();
  try {
    const conversation = await patch(`/v1/conversations/${encodeURIComponent(conversationId)}`, { title: $("rename-input").value });
    if (state.conversationId !== conversationId) return;
    state.title = conversation.title || "Untitled";
    $("conversation-title").textContent = state.title;
    const listed = state.conversations.find((item) => item.conversationId === conversationId);
    if (listed) listed.title = conversation.title;
    renderConversations();
    endRename();
  } catch (problem) {
    showProblem(problem, "Could not rename the conversation");
  }
}

// --- wiring --------------------------------------------------------------------------------------------

function bind() {
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", signOut);
  $("workspace").addEventListener("change", changeWorkspace);
  $("new-chat").addEventListener("click", () => {
    history.pushState(null, "", location.pathname);
    openConversation(null);
    $("question").focus();
  });
  $("more-conversations").addEventListener("click", () => loadConversations({ more: true }));
  $("rename").addEventListener("click", startRename);
  $("rename-form").addEventListener("submit", saveRename);
  $("rename-cancel").addEventListener("click", endRename);
  $("rename-input").addEventListener("keydown", (event) => {
    if (event.key === "Escape") endRename();
  });
  $("composer").addEventListener("submit", send);
  $("stop").addEventListener("click", stopRun);
  $("file-input").addEventListener("change", attachFiles);
  $("question").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  window.addEventListener("hashchange", () => {
    const id = conversationInLocation();
    if (id !== state.conversationId) openConversation(id);
  });
  window.addEventListener("popstate", () => {
    const id = conversationInLocation();
    if (id !== state.conversationId) openConversation(id);
  });
}

async function start() {
  bind();
  try {
    state.principal = await get("/v1/sessions/current");
  } catch (problem) {
    if (problem instanceof Problem && problem.status === 401) {
      showSignIn();
      return;
    }
    showSignIn(problem instanceof Problem ? problem.detail : String(problem));
    return;
  }
  await showApp();
}

start();
