// The portal's REST API from the pages: JSON in, JSON out, CSRF header on state changes.

/** The session's CSRF token, from <meta name="csrf-token"> in the page head. */
export function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.getAttribute("content") || "" : "";
}

/** An error from the API, with the message it sent ({"error": "..."}) when there is one. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function request(method, path, params, body) {
  const url = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") {
      url.searchParams.set(name, String(value));
    }
  }
  const headers = { Accept: "application/json" };
  if (method !== "GET") {
    headers["X-CSRF-Token"] = csrfToken();
  }
  const init = { method: method, headers: headers, credentials: "same-origin" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (error) {
    throw new ApiError(0, "the portal cannot be reached");
  }
  let answer = null;
  try {
    answer = await response.json();
  } catch (error) {
    answer = null;
  }
  if (!response.ok) {
    const message = answer && typeof answer.error === "string" ? answer.error : "HTTP " + response.status;
    throw new ApiError(response.status, message);
  }
  return answer;
}

/** GET a JSON document; `params` become the query string (empty ones are left out). */
export function getJSON(path, params) {
  return request("GET", path, params);
}

/** POST without a body (the API's actions), with the CSRF header. */
export function postJSON(path) {
  return request("POST", path, null);
}

/** POST a JSON body, with the CSRF header. */
export function sendJSON(path, body) {
  return request("POST", path, null, body);
}

/** DELETE, with the CSRF header; `params` become the query string. */
export function deleteJSON(path, params) {
  return request("DELETE", path, params);
}

/**
 * Whether a `removed` live event ({room, device} | {room} | {room, prefix} | {prefix}) takes away
 * `device` of `room`.
 */
export function removes(selection, room, device) {
  if (selection === null || typeof selection !== "object") {
    return false;
  }
  if (typeof selection.room === "string" && selection.room !== room) {
    return false;
  }
  if (typeof selection.device === "string") {
    return selection.device === device;
  }
  return typeof selection.prefix !== "string" || device.startsWith(selection.prefix);
}
