// The dashboard: sign in with a token, watch every barrier live over /ws, open and close them.
// Live updates come from the WebSocket only; the one GET on sign-in checks the token and fills
// the log with recent history.

import { changesBetween, EventLog } from "./eventlog.js";
import { LiveFeed } from "./live.js";
import { callApi, forgetToken, liveUrl, savedToken, saveToken } from "./session.js";
import { TileBoard } from "./tiles.js";

const HISTORY_SIZE = 30;

const byId = (id) => document.getElementById(id);
const ui = {
  connection: byId("connection"),
  summary: byId("summary"),
  signOut: byId("sign-out"),
  banner: byId("banner"),
  bannerDetail: byId("banner-detail"),
  reconnectNow: byId("reconnect-now"),
  signIn: byId("sign-in"),
  form: byId("sign-in-form"),
  token: byId("token"),
  signInButton: byId("sign-in-button"),
  signInError: byId("sign-in-error"),
  workspace: byId("workspace"),
  boardTitle: byId("board-title"),
  noBarriers: byId("no-barriers"),
};
const board = new TileBoard(byId("tiles"), byId("tile-template"), sendCommand);
const log = new EventLog(byId("log"));

// { token, feed, history (shown with the first snapshot, which brings the names), live, wasLive }
let session = null;

async function signIn(token) {
  ui.signInError.textContent = "";
  ui.signInButton.disabled = true;
  let history = [];
  try {
    history = (await callApi(token, "GET", `/barriers/events?limit=${HISTORY_SIZE}`)).events;
  } catch (error) {
    if (error.status === 401 || error.status === 403) {
      forgetToken();
      showSignIn(error.message);
      return;
    }
    // The API or its database is away: watch anyway, the feed keeps trying by itself.
    log.add({ text: `History unavailable: ${error.message}`, severity: "warning" });
  } finally {
    ui.signInButton.disabled = false;
  }
  saveToken(token);
  const feed = new LiveFeed(liveUrl(token), { onMessage, onLive, onDown });
  session = { token, feed, history, live: false, wasLive: false };
  showWorkspace();
  feed.start();
}

function signOut() {
  session?.feed.stop();
  session = null;
  forgetToken();
  board.clear();
  log.clear();
  showSignIn("");
}

async function sendCommand(barrierId, kind) {
  const answer = await callApi(session.token, "POST", `/barriers/${barrierId}/${kind}`);
  return answer.message;
}

function onLive() {
  if (session.wasLive) {
    log.add({ text: "Live updates restored; every status was refreshed." });
  }
  session.live = true;
  session.wasLive = true;
  ui.banner.hidden = true;
  setConnection("live", "Live");
}

function onDown({ failures, retryInMs }) {
  if (session.live) {
    log.add({ text: "Live updates lost; reconnecting.", severity: "alarm" });
  }
  session.live = false;
  const seconds = Math.max(1, Math.round(retryInMs / 1000));
  const tries = failures > 1 ? ` (${failures} attempts have failed)` : "";
  ui.bannerDetail.textContent = `Reconnecting in ${seconds} s${tries}.`;
  ui.banner.hidden = false;
  setConnection("down", "Disconnected");
}

function onMessage(message) {
  const receivedAt = performance.now();
  if (message.type === "snapshot") {
    applySnapshot(message.barriers, receivedAt);
  } else if (message.type === "status") {
    applyChange(message.barrier, receivedAt);
  } // "ping" only shows that the link is alive
}

// The first snapshot of a connection, or a resync on a live one: either way, what changed
// since the last update seen was missed, and is logged as such.
function applySnapshot(views, receivedAt) {
  const note = session.live ? " (caught up by a resync)" : " (while disconnected)";
  for (const view of views) {
    logChanges(board.view(view.barrier_id), view, note);
  }
  board.show(views, receivedAt);
  if (session.history.length > 0) {
    log.addHistory(session.history, (id) => board.view(id)?.name);
    session.history = [];
  }
  ui.noBarriers.hidden = board.size > 0;
  renderSummary();
}

function applyChange(view, receivedAt) {
  logChanges(board.view(view.barrier_id), view, "");
  board.update(view, receivedAt);
  ui.noBarriers.hidden = true;
  renderSummary();
}

function logChanges(before, after, note) {
  if (before === null) {
    return; // a barrier seen for the first time: its tile says it all
  }
  for (const { text, severity } of changesBetween(before, after)) {
    log.add({ barrier: after, text: text + note, severity });
  }
}

function renderSummary() {
  const views = board.views();
  const count = (test) => views.filter(test).length;
  ui.summary.textContent = [
    `${views.length} barriers`,
    `${count((v) => v.status === "opened")} opened`,
    `${count((v) => v.status === "error" || v.fault)} in fault`,
    `${count((v) => v.quality !== "good")} not reading well`,
    `${count((v) => v.occupied)} with a vehicle`,
  ].join(" · ");
}

function setConnection(state, word) {
  ui.connection.dataset.state = state;
  ui.connection.textContent = word;
  ui.workspace.dataset.feed = state;
}

function showSignIn(message) {
  ui.workspace.hidden = true;
  ui.banner.hidden = true;
  ui.signOut.hidden = true;
  ui.signIn.hidden = false;
  ui.summary.textContent = "";
  setConnection("signed-out", "Signed out");
  ui.signInError.textContent = message;
  ui.token.value = "";
  ui.token.focus();
}

function showWorkspace() {
  ui.signIn.hidden = true;
  ui.workspace.hidden = false;
  ui.signOut.hidden = false;
  setConnection("connecting", "Connecting");
  ui.boardTitle.focus();
}

ui.form.addEventListener("submit", (event) => {
  event.preventDefault();
  const token = ui.token.value.trim();
  if (token) {
    signIn(token);
  }
});
ui.signOut.addEventListener("click", signOut);
ui.reconnectNow.addEventListener("click", () => session?.feed.reconnectNow());
setInterval(() => board.tick(performance.now()), 1000);

const remembered = savedToken();
if (remembered) {
  signIn(remembered);
} else {
  showSignIn("");
}
