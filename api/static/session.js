// The caller's bearer token, kept for this browser tab only, and the requests that carry it.

const TOKEN_KEY = "barrier-dashboard-token";

export function savedToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function saveToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

// An answer other than 2xx: the API's stable error code and its one-sentence message.
class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// Call the API with the token; resolve to the JSON body, or throw an ApiError.
export async function callApi(token, method, path) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
    });
  } catch {
    throw new ApiError(0, "unreachable", "The API cannot be reached; check the network and retry.");
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError(
      response.status,
      body?.error ?? "http_error",
      body?.message ?? `The API answered ${response.status} ${response.statusText}.`,
    );
  }
  return body;
}

// The live feed's address: browsers cannot set headers on a WebSocket, so the token rides along.
export function liveUrl(token) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}/ws?token=${encodeURIComponent(token)}`;
}
