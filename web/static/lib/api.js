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

async function request(method, path, params) {
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
  let response;
  try {
    response = await fetch(url, { method: method, headers: headers, credentials: "same-origin" });
  } catch (error) {
    throw new ApiError(0, "the portal cannot be reached");
  }
  let body = null;
  try {
    body = await response.json();
  } catch (error) {
    body = null;
  }
  if (!response.ok) {
    const message = body && typeof body.error === "string" ? body.error : "HTTP " + response.status;
    throw new ApiError(response.status, message);
  }
  return body;
}

/** GET a JSON document; `params` become the query string (empty ones are left out). */
export function getJSON(path, params) {
  return request("GET", path, params);
}

/** POST without a body (the API's actions), with the CSRF header. */
export function postJSON(path) {
  return request("POST", path, null);
}
