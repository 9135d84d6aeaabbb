// Following a run's stream with EventSource. After a network cut the browser reconnects by itself and
// sends Last-Event-ID, so the server resumes after the last event seen; if the browser gives up (the
// stream answered an error), this reopens it with `?lastEventId=` after a pause. Ends at the terminal event.

import { Problem, get } from "./api.js";

export const TERMINAL_EVENTS = ["assistant.completed", "run.cancelled", "run.failed"];
const EVENT_TYPES = [
  "run.started", "assistant.delta", "tool.call", "tool.result", "tool.approval_required", "run.backgrounded",
  "safety.stopped", ...TERMINAL_EVENTS,
];
const MAX_PAUSE_MS = 10000;

// `onEvent(type, data)` for each event once; `onConnection(state)` with "open" | "reconnecting"; `onFailure(problem)`
// when the run cannot be followed (gone, or the session ended). Returns `{ close() }`.
export function followRun(runId, { onEvent, onConnection = () => {}, onFailure = () => {} }) {
  let lastEventId = -1;
  let source = null;
  let closed = false;
  let pauseMs = 500;
  let timer = null;

  const url = () => {
    const base = `/v1/runs/${encodeURIComponent(runId)}/stream`;
    return lastEventId >= 0 ? `${base}?lastEventId=${lastEventId}` : base;
  };

  const close = () => {
    closed = true;
    clearTimeout(timer);
    window.removeEventListener("online", reopenNow);
    if (source) source.close();
  };

  function receive(message) {
    if (closed) return;
    const id = message.lastEventId === "" ? NaN : Number(message.lastEventId);
    // Ids are log offsets, increasing; several tool calls of one proposal share one. Never apply an older one twice.
    if (Number.isFinite(id)) {
      if (id < lastEventId) return;
      lastEventId = id;
    }
    pauseMs = 500;
    let data;
    try {
      data = JSON.parse(message.data);
    } catch {
      return;
    }
    if (TERMINAL_EVENTS.includes(message.type)) close();
    onEvent(message.type, data);
  }

  async function gaveUp() {
    // EventSource stops for good on an HTTP error: find out whether the run can still be followed.
    try {
      await get(`/v1/runs/${encodeURIComponent(runId)}`);
    } catch (problem) {
      if (problem instanceof Problem && problem.status >= 400 && problem.status < 500) {
        close();
        onFailure(problem);
        return;
      }
    }
    if (closed) return;
    timer = setTimeout(open, pauseMs);
    pauseMs = Math.min(pauseMs * 2, MAX_PAUSE_MS);
  }

  function reopenNow() {
    if (closed || (source && source.readyState === EventSource.OPEN)) return;
    clearTimeout(timer);
    open();
  }

  function open() {
    if (closed) return;
    if (source) source.close();
    source = new EventSource(url());
    source.onopen = () => onConnection("open");
    source.onerror = () => {
      if (closed) return;
      onConnection("reconnecting");
      if (source.readyState === EventSource.CLOSED) gaveUp();
    };
    for (const type of EVENT_TYPES) source.addEventListener(type, receive);
  }

  window.addEventListener("online", reopenNow);
  open();
  return { close };
}
