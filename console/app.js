// The console's shell: signing in and out, and the router that shows a
// page for the location's hash (#/streams/orders).
import { TOKEN, get, el, errorBox, leavePage, whenUnauthorized, headers } from "./lib.js";
import { overview } from "./overview.js";
import { streams, stream } from "./streams.js";
import { sqlEditor } from "./sql.js";
import { views, view } from "./views.js";
import { groups } from "./groups.js";
import { simulator } from "./simulator.js";

let me = null;

function requireSignIn() {
  sessionStorage.removeItem(TOKEN);
  const dialog = document.getElementById("signin");
  if (!dialog.open) dialog.showModal();
}

async function whoami() {
  try {
    me = await get("/v1/whoami");
  } catch (e) {
    if (e.status === 401) return null;
    throw e;
  }
  document.getElementById("who").textContent = me.user ? `Signed in as ${me.user}` : "";
  document.getElementById("signout").hidden = !me.auth_required;
  return me;
}

async function signIn(ev) {
  ev.preventDefault();
  const user = document.getElementById("signin-user").value;
  const password = document.getElementById("signin-password").value;
  const r = await fetch("/v1/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user, password }),
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    document.getElementById("signin-error").textContent = body.error || r.statusText;
    return;
  }
  sessionStorage.setItem(TOKEN, body.token);
  document.getElementById("signin-error").textContent = "";
  document.getElementById("signin").close();
  await whoami();
  show();
}

async function signOut() {
  await fetch("/v1/logout", { method: "POST", headers: headers() });
  sessionStorage.removeItem(TOKEN);
  me = null;
  document.getElementById("who").textContent = "";
  document.getElementById("main").replaceChildren();
  requireSignIn();
}

const pages = [
  [/^#\/overview$/, () => overview()],
  [/^#\/streams$/, () => streams()],
  [/^#\/streams\/(.+)$/, (m) => stream(decodeURIComponent(m[1]))],
  [/^#\/sql$/, () => sqlEditor()],
  [/^#\/views$/, () => views()],
  [/^#\/views\/(.+)$/, (m) => view(decodeURIComponent(m[1]))],
  [/^#\/groups$/, () => groups()],
  [/^#\/simulator$/, () => simulator()],
];

async function show() {
  leavePage();
  if (!me) return;
  const hash = location.hash || "#/overview";
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", hash.startsWith(`#/${a.dataset.page}`));
  const main = document.getElementById("main");
  main.replaceChildren(el("p", { class: "muted" }, "Loading…"));
  for (const [re, page] of pages) {
    const m = hash.match(re);
    if (!m) continue;
    try {
      main.replaceChildren(...[await page(m)].flat());
    } catch (e) {
      if (e.name === "AbortError") return;
      main.replaceChildren(el("h1", {}, "Cannot show this page"), errorBox(e));
    }
    return;
  }
  main.replaceChildren(el("h1", {}, "No such page"));
}

whenUnauthorized(requireSignIn);
window.addEventListener("hashchange", show);
document.getElementById("signin-form").addEventListener("submit", signIn);
document.getElementById("signout").addEventListener("click", signOut);
if (await whoami()) show(); else requireSignIn();
