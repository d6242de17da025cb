// DOM helpers and number formats shared by every view. No state.

/** h("tag.class", {attrs, on: {click}}, ...children) */
export function h(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const node = document.createElement(tag || "div");
  if (classes.length) node.className = classes.join(" ");
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "on") for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
    else if (k === "testid") node.dataset.testid = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "text") node.textContent = v;
    else if (k === "class") node.className = [node.className, v].filter(Boolean).join(" ");
    else if (k in node && typeof v !== "string") node[k] = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** node.replaceChildren without the null/false placeholders of conditional children. */
export function put(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

export const fmt = {
  num: (v, d = 3) => (v === null || v === undefined || !Number.isFinite(Number(v)) ? "–" : Number(v).toFixed(d)),
  signed: (v, d = 4) => (v === null || v === undefined ? "–" : `${v >= 0 ? "+" : ""}${Number(v).toFixed(d)}`),
  pct: (v) => (v === null || v === undefined ? "–" : `${(Number(v) * 100).toFixed(1)}%`),
  sparsity: (v) => (v === null || v === undefined ? "–" : `${+(Number(v) * 100).toFixed(2)}%`),
  bytes(n) {
    if (n === null || n === undefined) return "–";
    const units = ["B", "KB", "MB", "GB"];
    let v = Number(n);
    let i = 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i += 1;
    }
    return i === 0 ? `${v} B` : `${v.toFixed(2)} ${units[i]}`;
  },
  count(n) {
    if (n === null || n === undefined) return "–";
    const v = Number(n);
    if (v >= 1e6) return `${(v / 1e6).toFixed(2)}M`;
    if (v >= 1e3) return `${(v / 1e3).toFixed(1)}k`;
    return String(v);
  },
  date(s) {
    if (!s) return "–";
    const d = new Date(s);
    return Number.isNaN(d.getTime()) ? String(s) : d.toLocaleString();
  },
  ratio: (v) => (v === null || v === undefined ? "–" : `${Number(v).toFixed(2)}×`),
};

export function sparsitiesOf(request = {}) {
  if (Array.isArray(request.sparsities)) return request.sparsities;
  return request.sparsity === null || request.sparsity === undefined ? [] : [request.sparsity];
}

export function shortId(id) {
  return id && id.length > 12 ? `${id.slice(0, 8)}…` : id || "";
}

/** A definition list of [term, value] pairs, leaving out empty values. */
export function dl(pairs) {
  return h(
    "dl.kv",
    {},
    pairs.filter(([, v]) => v !== undefined && v !== null && v !== "").flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]),
  );
}
