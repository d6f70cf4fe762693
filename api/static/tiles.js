// One tile per barrier. Tiles stay in the DOM across updates, so keyboard focus is never lost
// when a change arrives while an operator is on a button.

import {
  ageWords,
  barrierLabel,
  faultWord,
  occupancyWord,
  pendingWord,
  qualityWord,
  statusWord,
} from "./format.js";

export class TileBoard {
  #list;
  #template;
  #onCommand;
  #tiles = new Map(); // barrier id -> { view, receivedAt, element, busy }

  // onCommand(barrierId, kind) resolves to the API's answer or throws an error with a message.
  constructor(list, template, onCommand) {
    this.#list = list;
    this.#template = template;
    this.#onCommand = onCommand;
  }

  get size() {
    return this.#tiles.size;
  }

  views() {
    return [...this.#tiles.values()].map((tile) => tile.view);
  }

  view(barrierId) {
    return this.#tiles.get(barrierId)?.view ?? null;
  }

  // Show exactly the barriers of a snapshot; `receivedAt` is performance.now() on arrival.
  show(views, receivedAt) {
    const wanted = new Set(views.map((view) => view.barrier_id));
    for (const [id, tile] of this.#tiles) {
      if (!wanted.has(id)) {
        tile.element.remove();
        this.#tiles.delete(id);
      }
    }
    for (const view of views) {
      this.update(view, receivedAt);
    }
  }

  update(view, receivedAt) {
    const tile = this.#tiles.get(view.barrier_id) ?? this.#create(view.barrier_id);
    tile.view = view;
    tile.receivedAt = receivedAt;
    renderTile(tile, receivedAt);
  }

  clear() {
    this.show([], 0);
  }

  // Re-render the ages of the last reads (once a second).
  tick(now) {
    for (const tile of this.#tiles.values()) {
      renderAge(tile, now);
    }
  }

  #create(barrierId) {
    const element = this.#template.content.firstElementChild.cloneNode(true);
    const tile = { view: null, receivedAt: 0, element, busy: false };
    element.dataset.barrierId = String(barrierId);
    const name = element.querySelector(".tile-name");
    name.id = `tile-${barrierId}-name`;
    element.querySelector("article").setAttribute("aria-labelledby", name.id);
    for (const button of element.querySelectorAll("button[data-command]")) {
      button.addEventListener("click", () => this.#send(tile, button.dataset.command));
    }
    const next = [...this.#tiles.keys()].filter((id) => id > barrierId).sort((a, b) => a - b)[0];
    this.#list.insertBefore(element, next === undefined ? null : this.#tiles.get(next).element);
    this.#tiles.set(barrierId, tile);
    return tile;
  }

  async #send(tile, kind) {
    if (tile.busy) {
      return;
    }
    const answer = tile.element.querySelector(".answer");
    setBusy(tile, true);
    answer.dataset.outcome = "pending";
    answer.textContent = `Sending ${kind}…`;
    try {
      const message = await this.#onCommand(tile.view.barrier_id, kind);
      answer.dataset.outcome = "accepted";
      answer.textContent = `Accepted: ${message}`;
    } catch (error) {
      answer.dataset.outcome = "refused";
      answer.textContent = `Refused: ${error.message}`;
    } finally {
      setBusy(tile, false);
    }
  }
}

// Buttons stay focusable while a command is on its way; they just ignore presses.
function setBusy(tile, busy) {
  tile.busy = busy;
  for (const button of tile.element.querySelectorAll("button[data-command]")) {
    button.setAttribute("aria-disabled", String(busy));
  }
}

function renderTile(tile, now) {
  const { view, element } = tile;
  const label = barrierLabel(view);
  element.dataset.status = view.status ?? "unknown";
  element.dataset.quality = view.quality;
  element.dataset.fault = view.fault ? "yes" : "no";
  element.dataset.occupied = view.occupied ? "yes" : "no";
  text(element, ".tile-name", label);
  text(element, ".status-word", statusWord(view.status));
  renderPosition(element, view.position);
  text(element, ".quality", qualityWord(view.quality));
  text(element, ".fault", faultWord(view.fault));
  text(element, ".occupancy", occupancyWord(view.occupied));
  text(element, ".pending", pendingWord(view.pending));
  element.querySelector(".pending-row").hidden = !view.pending;
  for (const button of element.querySelectorAll("button[data-command]")) {
    button.setAttribute("aria-label", `${button.textContent} ${label}`);
  }
  renderAge(tile, now);
}

function renderPosition(element, position) {
  const bar = element.querySelector(".bar");
  const known = position !== null && position !== undefined;
  bar.querySelector(".bar-fill").style.width = `${known ? position : 0}%`;
  if (known) {
    bar.setAttribute("aria-valuenow", String(position));
    bar.setAttribute("aria-valuetext", `${position} % open`);
  } else {
    bar.removeAttribute("aria-valuenow");
    bar.setAttribute("aria-valuetext", "unknown");
  }
  text(element, ".position-value", known ? `${position} %` : "—");
}

// The reading's age as the API judged it on arrival, plus the time since.
function renderAge(tile, now) {
  const reported = tile.view.age_seconds;
  const age = reported === null ? null : reported + (now - tile.receivedAt) / 1000;
  text(tile.element, ".age", ageWords(age));
}

function text(element, selector, value) {
  const target = element.querySelector(selector);
  if (target.textContent !== value) {
    target.textContent = value;
  }
}
