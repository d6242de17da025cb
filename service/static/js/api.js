// Talking to the prunebench API: bearer key from sessionStorage, problem+json errors.

const KEY_STORAGE = "prunebench.apiKey";

export function getKey() {
  try {
    return sessionStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";
  }
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

function authHeaders(extra = {}) {
  const headers = { Accept: "application/json", ...extra };
  const key = getKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  return headers;
}

/** An API refusal, carrying its RFC 9457 problem details. */
export class ApiError extends Error {
  constructor(status, problem) {
    const title = problem.title || `HTTP ${status}`;
    super(problem.detail && problem.detail !== title ? `${title}: ${formatDetail(problem.detail)}` : title);
    this.status = status;
    this.problem = problem;
  }
}

function formatDetail(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => (d?.msg ? `${(d.loc || []).filter((p) => p !== "body").join(".")}: ${d.msg}` : JSON.stringify(d))).join("; ");
  }
  return JSON.stringify(detail);
}

async function problemOf(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    if (body && typeof body === "object") return body;
  } catch {
    /* not JSON */
  }
  return { title: response.statusText || `HTTP ${response.status}`, status: response.status, detail: text.slice(0, 500) || undefined };
}

/** fetch JSON from the API; throws ApiError with the problem on a non-2xx answer. */
export async function api(path, { method = "GET", body, signal } = {}) {
  const init = { method, headers: authHeaders(), signal };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, { title: "Cannot reach the API", detail: String(err.message || err) });
  }
  if (!response.ok) throw new ApiError(response.status, await problemOf(response));
  if (response.status === 204) return null;
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

/** Download an authenticated URL as a file (fetch with the key, then a blob link). */
export async function downloadBlob(path, fallbackName) {
  const response = await fetch(path, { headers: authHeaders({ Accept: "*/*" }) });
  if (!response.ok) throw new ApiError(response.status, await problemOf(response));
  const blob = await response.blob();
  let name = fallbackName;
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition);
  if (match) name = decodeURIComponent(match[1]).split(/[\\/]/).pop() || fallbackName;
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.rel = "noopener";
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
  return name;
}

/** Upload a checkpoint with XMLHttpRequest so upload progress can be shown. */
export function uploadCheckpoint(file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/checkpoints");
    const headers = authHeaders();
    for (const [k, v] of Object.entries(headers)) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) onProgress(e.loaded, e.total);
    };
    xhr.onerror = () => reject(new ApiError(0, { title: "Upload failed", detail: "network error" }));
    xhr.onabort = () => reject(new ApiError(0, { title: "Upload aborted" }));
    xhr.onload = () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else
        reject(
          new ApiError(
            xhr.status,
            body && typeof body === "object" ? body : { title: xhr.statusText || `HTTP ${xhr.status}`, detail: xhr.responseText.slice(0, 500) },
          ),
        );
    };
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
}
