// The readiness badge in the top bar (GET /readyz, no key needed).

export async function pollHealth() {
  const badge = document.getElementById("health");
  try {
    const res = await fetch("/readyz", { headers: { Accept: "application/json" } });
    badge.textContent = res.ok ? "ready" : "not ready";
    badge.className = `health ${res.ok ? "ok" : "bad"}`;
  } catch {
    badge.textContent = "offline";
    badge.className = "health bad";
  }
}
