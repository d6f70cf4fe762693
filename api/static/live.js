// The live status feed: one WebSocket to /ws, reopened with capped, jittered backoff when it drops.
// The API sends a full snapshot on every connect, so a reconnection needs no catching up.

const FIRST_RETRY_MS = 500;
const MAX_RETRY_MS = 15_000;
// The API pings an idle client every 20 s by default; three missed pings mean a dead link
// that the browser has not noticed (a half-open TCP connection never fires "close").
const SILENCE_LIMIT_MS = 60_000;
// Application close code for "we gave up on a silent link" (4000-4999 are free for apps).
const CLOSE_SILENT = 4000;

export class LiveFeed {
  #url;
  #handlers;
  #socket = null;
  #live = false; // this socket has delivered its first snapshot
  #failures = 0;
  #retryTimer = null;
  #silenceTimer = null;

  // handlers: onMessage(message); onLive() after a connection's first snapshot;
  // onDown({ failures, retryInMs }) when a connection ends or fails.
  constructor(url, handlers) {
    this.#url = url;
    this.#handlers = handlers;
  }

  start() {
    this.#connect();
  }

  stop() {
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#silenceTimer);
    const socket = this.#socket;
    this.#socket = null;
    socket?.close(1000, "signed out");
  }

  // Skip the rest of the backoff wait (the operator pressed "Reconnect now").
  reconnectNow() {
    if (this.#socket === null) {
      clearTimeout(this.#retryTimer);
      this.#connect();
    }
  }

  #connect() {
    const socket = new WebSocket(this.#url);
    this.#socket = socket;
    this.#live = false;
    socket.addEventListener("message", (event) => this.#receive(socket, event));
    // "error" is always followed by "close", which is where the failure is handled.
    socket.addEventListener("close", () => this.#drop(socket));
  }

  #receive(socket, event) {
    if (socket !== this.#socket) {
      return;
    }
    this.#watchSilence(socket);
    const message = JSON.parse(event.data);
    this.#handlers.onMessage(message);
    // Only a snapshot proves the link works, not the bare handshake. Later snapshots on the
    // same socket are resyncs (the client fell behind, or the API's subscription came back).
    if (message.type === "snapshot" && !this.#live) {
      this.#live = true;
      this.#failures = 0;
      this.#handlers.onLive();
    }
  }

  #watchSilence(socket) {
    clearTimeout(this.#silenceTimer);
    this.#silenceTimer = setTimeout(() => {
      socket.close(CLOSE_SILENT, "no message within the silence limit");
      this.#drop(socket);
    }, SILENCE_LIMIT_MS);
  }

  #drop(socket) {
    if (socket !== this.#socket) {
      return; // already handled, or stopped on purpose
    }
    this.#socket = null;
    clearTimeout(this.#silenceTimer);
    const retryInMs = backoff(this.#failures);
    this.#failures += 1;
    this.#retryTimer = setTimeout(() => this.#connect(), retryInMs);
    this.#handlers.onDown({ failures: this.#failures, retryInMs });
  }
}

// Delay before the next attempt: doubling from FIRST_RETRY_MS up to MAX_RETRY_MS, with jitter
// so that many screens do not reconnect to a restarted API in one burst.
function backoff(failures) {
  const ceiling = Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** failures);
  return ceiling / 2 + Math.random() * (ceiling / 2);
}
