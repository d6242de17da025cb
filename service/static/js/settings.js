// The API key panel: the key lives in sessionStorage for this tab only (see api.js).

import { getKey, setKey } from "./api.js";
import { clearError } from "./errors.js";

const settings = document.getElementById("settings");
const settingsToggle = document.getElementById("settings-toggle");
const keyInput = document.getElementById("api-key");
const keyState = document.getElementById("key-state");

function renderKeyState() {
  const has = Boolean(getKey());
  keyState.textContent = has ? "key set for this tab" : "no key set";
  settingsToggle.textContent = has ? "API key ✓" : "API key";
  settingsToggle.classList.toggle("warn", !has);
}

export function openSettings(open) {
  settings.hidden = !open;
  settingsToggle.setAttribute("aria-expanded", String(open));
  if (open) keyInput.focus();
}

/** True while the panel is closed. */
export function settingsHidden() {
  return settings.hidden;
}

/** Wire the panel's buttons; `onSaved` runs after a key is saved (the app re-renders the view). */
export function initSettings(onSaved) {
  settingsToggle.addEventListener("click", () => openSettings(settings.hidden));
  document.getElementById("settings-form").addEventListener("submit", (e) => {
    e.preventDefault();
    setKey(keyInput.value.trim());
    keyInput.value = "";
    renderKeyState();
    openSettings(false);
    clearError();
    onSaved();
  });
  document.getElementById("clear-key").addEventListener("click", () => {
    setKey("");
    keyInput.value = "";
    renderKeyState();
  });
  renderKeyState();
}
