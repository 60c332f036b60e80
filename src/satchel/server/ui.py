"""The /ui admin page: one static HTML page and a small script over the JSON API.

No build step: the page asks for a token (kept in the tab's sessionStorage), then lists
scopes, browses keys by pattern a page at a time, shows a value with its metadata,
edits str/JSON values, deletes with confirmation, and shows usage against quota (every
tenant's for an admin token). Data is only ever put in the page as text, never as HTML.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response

_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; "
    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>satchel admin</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em} h2{font-size:1.05em;margin:.2em 0 .5em}
section{border:1px solid #ccc;border-radius:6px;padding:.7em 1em;margin:.7em 0}
#main{display:grid;grid-template-columns:14em 1fr 1.4fr;gap:1em}
table{border-collapse:collapse;width:100%} td,th{padding:.2em .5em;text-align:left;
border-bottom:1px solid #eee;font-size:.95em} tr.key:hover{background:#f3f6ff;cursor:pointer}
pre{background:#f6f6f6;padding:.6em;overflow:auto;max-height:22em;white-space:pre-wrap}
.err{color:#b00} button{margin:.2em .3em .2em 0} textarea{width:100%;height:8em}
ul{padding-left:1.1em} li a{cursor:pointer;color:#0645ad}
</style></head><body>
<h1>satchel admin</h1>
<form id="login"><label>Token <input id="token" type="password" size="50"
 autocomplete="off"></label> <button type="submit">Open</button></form>
<p id="error" class="err" role="alert"></p>
<section id="usage-box"><h2>Usage</h2><table id="usage"></table></section>
<div id="main">
<section><h2>Scopes</h2><ul id="scopes"></ul></section>
<section><h2>Keys <span id="scope-name"></span></h2>
<form id="filter"><input id="pattern" value="*" size="20" aria-label="pattern">
<button type="submit">Browse</button></form>
<table id="keys"><thead><tr><th>key</th><th>size</th><th>version</th></tr></thead>
<tbody></tbody></table><button id="more" hidden>Next page</button></section>
<section id="view" hidden><h2>Value</h2><table id="meta"></table><pre id="value"></pre>
<div id="edit-box"><textarea id="edit" aria-label="new value"></textarea>
<button id="save">Save</button> <small id="edit-hint"></small></div>
<button id="delete">Delete</button></section>
</div>
<script src="/ui/app.js"></script>
</body></html>
"""

SCRIPT = r"""
"use strict";
const $ = (id) => document.getElementById(id);
let scope = null, cursor = null, current = null;

async function api(method, path, body) {
  const headers = {"Authorization": "Bearer " + sessionStorage.getItem("satchel-token")};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, {method, headers,
    body: body === undefined ? undefined : JSON.stringify(body)});
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error((data.error && data.error.message) || r.statusText);
  return data;
}
const q = (o) => new URLSearchParams(o).toString();
const when = (t) => t == null ? "never" : new Date(t * 1000).toISOString();
function fail(e) { $("error").textContent = String(e.message || e); }
function row(table, cells, tag) {
  const tr = table.insertRow();
  for (const c of cells) {
    const td = document.createElement(tag || "td"); td.textContent = c; tr.appendChild(td);
  }
  return tr;
}

async function loadUsage() {
  const t = $("usage"); t.replaceChildren();
  row(t, ["tenant", "bytes", "quota bytes", "keys", "quota keys", "mode"], "th");
  let list;
  try { list = (await api("GET", "/v1/tenants")).tenants; }
  catch (e) { list = [await api("GET", "/v1/usage")]; }
  for (const u of list) {
    const pct = u.quota_bytes ? (100 * u.bytes / u.quota_bytes).toFixed(1) + "%" : "";
    row(t, [u.tenant, u.bytes + " (" + pct + ")", u.quota_bytes, u.keys, u.quota_keys,
            u.readonly ? "read-only" : "read-write"]).dataset.tenant = u.tenant;
  }
}

async function loadScopes() {
  const ul = $("scopes"); ul.replaceChildren();
  for (const s of (await api("GET", "/v1/scopes")).scopes) {
    const li = document.createElement("li"), a = document.createElement("a");
    a.textContent = s; a.dataset.scope = s;
    a.onclick = () => { scope = s; $("scope-name").textContent = "in " + s; browse(true); };
    li.appendChild(a); ul.appendChild(li);
  }
}

async function browse(fresh) {
  if (!scope) return;
  const body = $("keys").tBodies[0];
  if (fresh) { body.replaceChildren(); cursor = null; }
  const p = {scope, pattern: $("pattern").value || "*", limit: 50};
  if (cursor) p.cursor = cursor;
  const page = await api("GET", "/v1/keys?" + q(p));
  for (const k of page.keys) {
    const tr = row(body, [k.key, k.size, k.version]);
    tr.className = "key"; tr.dataset.key = k.key; tr.onclick = () => view(k.key).catch(fail);
  }
  cursor = page.next_cursor; $("more").hidden = !cursor;
}

async function view(key) {
  const v = await api("GET", "/v1/value?" + q({scope, key}));
  current = v; $("view").hidden = false;
  const m = $("meta"); m.replaceChildren();
  for (const [k, val] of [["key", v.key], ["scope", v.scope], ["type", v.type],
      ["size", v.size + " bytes"], ["version", v.version], ["created", when(v.created_at)],
      ["updated", when(v.updated_at)], ["expires", when(v.expires_at)]]) row(m, [k, val]);
  $("value").textContent = v.hex != null ? "hex: " + v.hex
    : v.text != null ? v.text
    : v.json_value !== null || v.type === "NoneType" ? JSON.stringify(v.json_value, null, 2)
    : "(" + v.type + ")";
  const editable = v.editable;  // the server says if saving it back as JSON is exact
  $("edit-box").hidden = !editable;
  $("edit").value = v.type === "str" ? v.text : JSON.stringify(v.json_value, null, 2);
  $("edit-hint").textContent = v.type === "str" ? "saved as a str" : "saved as JSON";
}

async function save() {
  const kind = current.type === "str" ? "str" : "json";
  let value = $("edit").value;
  if (kind === "json") value = JSON.parse(value);
  await api("PUT", "/v1/value?" + q({scope, key: current.key}), {value, kind});
  await view(current.key); await loadUsage();
}

async function remove() {
  if (!confirm("Delete key " + JSON.stringify(current.key) + " from scope " + scope + "?"))
    return;
  await api("DELETE", "/v1/value?" + q({scope, key: current.key}));
  $("view").hidden = true; current = null;
  await browse(true); await loadScopes(); await loadUsage();
}

async function start() {
  $("error").textContent = "";
  await loadUsage(); await loadScopes();
}
$("login").onsubmit = (e) => {
  e.preventDefault(); sessionStorage.setItem("satchel-token", $("token").value);
  $("token").value = ""; start().catch(fail);
};
$("filter").onsubmit = (e) => { e.preventDefault(); browse(true).catch(fail); };
$("more").onclick = () => browse(false).catch(fail);
$("save").onclick = () => save().catch(fail);
$("delete").onclick = () => remove().catch(fail);
if (sessionStorage.getItem("satchel-token")) start().catch(fail);
"""


def routes(app: FastAPI) -> None:
    """Register /ui and its script (no token needed to load them; the API asks for one)."""

    @app.get("/ui", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(PAGE, headers=_HEADERS)

    @app.get("/ui/app.js", include_in_schema=False)
    def script() -> Response:
        return Response(SCRIPT, media_type="text/javascript", headers=_HEADERS)
