// The event log, newest first: changes seen on the live feed, and the recent history on sign-in.

import { barrierLabel, clockTime, faultWord, qualityWord, statusWord } from "./format.js";

const MAX_ENTRIES = 200;

const ALARM_EVENTS = new Set([
  "command_failed",
  "command_timed_out",
  "command_rejected",
  "fault_raised",
  "link_lost",
]);
const WARNING_EVENTS = new Set(["command_expired", "command_superseded", "reading_stale"]);

export class EventLog {
  #list;

  constructor(list) {
    this.#list = list;
  }

  // A new entry at the top. severity: "info", "warning" or "alarm".
  add({ at = new Date(), barrier = null, text, severity = "info" }) {
    this.#list.prepend(entryElement(at, barrier, text, severity));
    while (this.#list.children.length > MAX_ENTRIES) {
      this.#list.lastElementChild.remove();
    }
  }

  // Events from GET /barriers/events (newest first), below whatever is already shown.
  addHistory(events, nameOf) {
    this.#list.setAttribute("aria-busy", "true"); // one announcement, not one per entry
    for (const event of events.slice(0, MAX_ENTRIES - this.#list.children.length)) {
      const barrier = { barrier_id: event.barrier_id, name: nameOf(event.barrier_id) };
      const entry = entryElement(
        new Date(event.created_at),
        barrier,
        describeEvent(event),
        severityOf(event.event_type),
      );
      entry.classList.add("from-history");
      this.#list.append(entry);
    }
    this.#list.setAttribute("aria-busy", "false");
  }

  clear() {
    this.#list.replaceChildren();
  }
}

// What changed between two views of one barrier, as log entries; position moves are left out.
export function changesBetween(before, after) {
  const changes = [];
  if (before.status !== after.status) {
    const why = after.pending ? ` (${after.pending.kind} by ${after.pending.actor})` : "";
    changes.push({
      text: `${statusWord(before.status)} → ${statusWord(after.status)}${why}`,
      severity: after.status === "error" ? "alarm" : "info",
    });
  }
  if (before.fault !== after.fault) {
    changes.push(
      after.fault
        ? { text: `Fault: ${faultWord(after.fault)}`, severity: "alarm" }
        : { text: `Fault cleared (${faultWord(before.fault)})`, severity: "info" },
    );
  }
  if (before.quality !== after.quality) {
    changes.push({
      text: `Reading ${qualityWord(before.quality)} → ${qualityWord(after.quality)}`,
      severity: { good: "info", stale: "warning" }[after.quality] ?? "alarm",
    });
  }
  if (Boolean(before.occupied) !== Boolean(after.occupied)) {
    changes.push({ text: after.occupied ? "Vehicle present" : "Vehicle gone", severity: "info" });
  }
  return changes;
}

// One history row in words, e.g. "Command confirmed · open · by operator".
function describeEvent(event) {
  const detail = event.detail ?? {};
  const what = event.event_type.replaceAll("_", " ");
  const parts = [what[0].toUpperCase() + what.slice(1)];
  if (detail.kind) {
    parts.push(detail.kind);
  }
  if ("from" in detail && "to" in detail) {
    // state changes move between statuses; link and staleness events between qualities
    const word = event.event_type === "state_changed" ? statusWord : qualityWord;
    parts.push(`${word(detail.from)} → ${word(detail.to)}`);
  }
  if (detail.fault) {
    parts.push(faultWord(detail.fault));
  }
  if (event.actor) {
    parts.push(`by ${event.actor}`);
  }
  return parts.join(" · ");
}

function severityOf(eventType) {
  if (ALARM_EVENTS.has(eventType)) {
    return "alarm";
  }
  return WARNING_EVENTS.has(eventType) ? "warning" : "info";
}

function entryElement(at, barrier, text, severity) {
  const entry = document.createElement("li");
  entry.className = "entry";
  entry.dataset.severity = severity;
  const time = document.createElement("time");
  time.dateTime = at.toISOString();
  time.textContent = clockTime(at);
  entry.append(time);
  if (barrier) {
    entry.dataset.barrierId = String(barrier.barrier_id);
    const who = document.createElement("span");
    who.className = "entry-barrier";
    who.textContent = barrierLabel(barrier);
    entry.append(who);
  }
  const what = document.createElement("span");
  what.className = "entry-text";
  what.textContent = severity === "info" ? text : `${severity.toUpperCase()}: ${text}`;
  entry.append(what);
  return entry;
}
