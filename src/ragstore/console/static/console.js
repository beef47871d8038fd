/* ragstore console.
 *
 * Reads the JSON API with the API key kept in this tab's sessionStorage, sent as a bearer
 * header (no cookies: nothing for another site to ride on; never in a URL). Every stored
 * text is rendered with textContent / text nodes, never as HTML. No build step, no
 * dependencies; the page's Content-Security-Policy allows this file and nothing inline.
 */
"use strict";
(function () {
  const KEY = "ragstore.apiKey";
  const body = document.body;
  const PAGE = body.dataset.page;
  const AUTH = body.dataset.auth === "on";
  const COLLECTION = body.dataset.collection || "";
  const DOCUMENT = body.dataset.document || "";
  /* The prefix the server is served under (uvicorn's --root-path behind a proxy: "/rag"),
   * "" at the host's root. Every link and API call goes through rooted(): written from the
   * host's root, behind such a proxy the pages failed, a sign-in left the prefix, and the
   * key was sent to whatever answered /v1/me at the host's root. */
  const ROOT = body.dataset.root || "";
  function rooted(path) { return ROOT + path; }
  const enc = encodeURIComponent;
  const $ = (id) => document.getElementById(id);

  class ApiError extends Error {
    constructor(status, problem, retryAfter) {
      super(problem.detail || problem.title || "HTTP " + status);
      this.status = status;
      this.problem = problem;
      this.retryAfter = retryAfter;  // seconds of the Retry-After header, or null
    }
  }

  /* Retry-After in seconds (a number of seconds or an HTTP date), or null. */
  function retryAfterOf(value) {
    if (!value) return null;
    const n = Number(value);
    if (Number.isFinite(n)) return Math.max(0, n);
    const when = Date.parse(value);
    return isNaN(when) ? null : Math.max(0, Math.ceil((when - Date.now()) / 1000));
  }

  function storedKey() { return sessionStorage.getItem(KEY); }

  let signingOut = false;  // a sign-out leaves the page without asking (see uploadAll)

  function signOut() {
    signingOut = true;
    sessionStorage.removeItem(KEY);
    location.assign(rooted("/ui/login"));
  }

  /* The login page, sent back to this page once signed in (pageAsked takes only a
   * console page of this origin). A key refused mid-visit went to the bare login page,
   * and the page the user was on (a document, a collection's upload outcomes) was lost. */
  function signInHere() {
    return rooted("/ui/login") + "?next=" +
      enc(location.pathname + location.search + location.hash);
  }

  function headers(key) {
    const h = { Accept: "application/json" };
    if (key) h.Authorization = "Bearer " + key;
    return h;
  }

  /* A 401 to the stored key (revoked, expired, or the server restarted with other keys).
   * The tab forgets the key; it goes to sign in at once unless the page shows uploads'
   * outcomes: it then stays, saying so, with a link to sign in again. Sent to the login
   * page in the middle of an upload, the user lost the list of which files were stored
   * and which were not, and was not told the upload had been cut short. */
  function keyRefused(detail) {
    sessionStorage.removeItem(KEY);
    if (!document.querySelector("#upload-list li")) {
      signingOut = true;
      location.assign(signInHere());
      return;
    }
    const node = $("page-error");
    node.replaceChildren("The server refused this tab's API key (" + detail + "), so " +
      "nothing further was sent; the uploads' outcomes are listed below. ",
      el("a", { href: signInHere(), id: "sign-in-again", text: "Sign in again" }));
    node.hidden = false;
  }

  /* A body's JSON object, or null for anything else (HTML, an array, nothing). */
  function jsonObject(text) {
    let data = null;
    try { data = JSON.parse(text); } catch (e) { data = null; }
    return data !== null && typeof data === "object" && !Array.isArray(data) ? data : null;
  }

  /* An answer's body as an object: the API's JSON, or, for a body that is not a JSON
   * object (a proxy's HTML error page, an empty body), a problem saying the status. The
   * whole HTML page was shown as the error's text, and an upload said only "failed: "
   * (HTTP/2 has no status text), so the user was not told what had gone wrong. */
  function answerOf(status, statusText, text) {
    const data = jsonObject(text);
    if (data !== null) return data;
    const plain = text && !/^\s*</.test(text) ? text.trim().split("\n")[0].slice(0, 200) : "";
    return { detail: "HTTP " + status + (statusText ? " " + statusText : "") +
                     (plain ? ": " + plain : "") +
                     " (an answer that is not the API's JSON: from a proxy in front of it?)" };
  }

  // Every collection: GET /v1/collections answers a page at a time; follow next_cursor
  // to the last (a server from before pages answers all of them and no cursor).
  async function allCollections() {
    const data = [];
    let cursor = null;
    for (;;) {
      const page = await api("GET", "/v1/collections?limit=1000" +
                                    (cursor ? "&cursor=" + encodeURIComponent(cursor) : ""));
      data.push(...page.data);
      if (!page.next_cursor || page.next_cursor === cursor || page.data.length === 0) {
        return { data: data, count: data.length };
      }
      cursor = page.next_cursor;
    }
  }

  /* No answer at all: the connection failed or broke (fetch's TypeError). Said as such:
   * the browser's own "Failed to fetch" told the user nothing. A write says more
   * (writeError: whether it was done is unknown). */
  class NoAnswer extends Error {}

  /* One API call to ``path`` under the root (rooted()); a problem response becomes an
   * ApiError, and so does a 2xx answer that is not the API's JSON (a proxy's page: it
   * was parsed all the same and said "Unexpected token '<'"). A 401 with the stored key
   * signs out (keyRefused). */
  async function api(method, path, payload, key, signal) {
    const explicit = key !== undefined;
    const init = { method: method, headers: headers(explicit ? key : storedKey()),
                   credentials: "omit", cache: "no-store", signal: signal };
    if (payload !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(payload);
    }
    let resp, text;
    try {
      resp = await fetch(rooted(path), init);
      text = await resp.text();
    } catch (err) {
      if (!(err instanceof TypeError)) throw err;  // an abort (a newer search) stays one
      throw new NoAnswer("no answer from the server (it is down or unreachable); " +
                         "reload to retry");
    }
    if (!resp.ok) {
      const err = new ApiError(resp.status, answerOf(resp.status, resp.statusText, text),
                               retryAfterOf(resp.headers.get("Retry-After")));
      if (resp.status === 401 && AUTH && !explicit) keyRefused(err.message);
      throw err;
    }
    if (!text) return null;  // 204
    const data = jsonObject(text);
    if (data === null) {
      throw new ApiError(resp.status, answerOf(resp.status, resp.statusText, text), null);
    }
    return data;
  }

  /* Build an element; strings become text nodes, so nothing is ever parsed as HTML. */
  function el(tag, props) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = String(v);
      else if (k === "dataset") Object.assign(node.dataset, v);
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (let i = 2; i < arguments.length; i++) {
      const c = arguments[i];
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  /* A stored text (a heading, a key's name) set inside a line the console composes: in a
   * <bdi>, whose bidi controls end where it ends. As plain text, a heading holding a
   * right-to-left override (U+202E) turned the rest of its line around, so a chunk's
   * " · paragraph · 12 tokens" read "snekot 21 · hpargarap · " and a key's scope after
   * its name was reversed: stored text rewrote what the console itself said. */
  function iso(text) { return el("bdi", { text: text }); }

  /* ``parts`` (strings, nodes) with ``sep`` between them, for el()'s children. */
  function joined(parts, sep) {
    return parts.flatMap((p, i) => (i ? [sep, p] : [p]));
  }

  /* A section path (headings), each heading isolated (iso). */
  function sectionPath(path) { return joined(path.map(iso), " › "); }

  /* JSON of stored values for display, bidi controls written as \u escapes (still JSON):
   * one metadata value's override turned every key and value after it around. */
  const BIDI = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
  function shownJson(value, indent) {
    return String(JSON.stringify(value, null, indent) ?? "").replace(
      BIDI, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
  }

  function problemText(err) {
    if (err instanceof ApiError && err.status === 429) {  // the key's rate limit: say when
      const wait = err.retryAfter !== null ? Math.max(1, Math.ceil(err.retryAfter)) : null;
      return "rate limited, retry in " + (wait !== null ? wait + "s" : "a moment");
    }
    if (err instanceof ApiError) {
      const code = err.problem.code ? " (" + err.problem.code + ")" : "";
      return err.message + code;
    }
    return String(err && err.message ? err.message : err);
  }

  /* Whether a write's outcome is unknown: no answer came (fetch rejects with a TypeError
   * when the connection breaks or the server is gone), or a proxy in front answered in
   * its place (a 502 or 504 with no ragstore problem code) while the request may run on.
   * The server may have done the write and lost the connection before answering, so
   * "Failed to fetch" read as a failure that was perhaps none, and invited a retry. */
  function outcomeUnknown(err) {
    if (!(err instanceof ApiError)) return true;
    return (err.status === 502 || err.status === 504) && !err.problem.code;
  }

  /* A failed write's message: the problem, or, its outcome unknown, that it is unknown. */
  function writeError(err, what) {
    if (!outcomeUnknown(err)) return problemText(err);
    return "no answer: the connection to the server broke, so whether " + what +
           " is unknown; the page shows what the server says now (reload the page to see)";
  }

  function showError(id, err) {
    const node = $(id);
    node.textContent = typeof err === "string" ? err : problemText(err);
    node.hidden = false;
  }

  function clearError(id) {
    const node = $(id);
    node.textContent = "";
    node.hidden = true;
  }

  /* Clear what earlier actions of the page said went wrong, as a new action starts: an
   * error left on screen (a failed create, search, upload or "More") was read as the
   * outcome of the later action that had succeeded. A key the server refused stays said
   * (keyRefused): it is not the outcome of an action but why nothing more is sent. */
  function clearStaleErrors(...ids) {
    for (const id of ["page-error", ...ids]) {
      if (id === "page-error" && $("sign-in-again")) continue;
      if ($(id)) clearError(id);
    }
  }

  function fmtBytes(n) {
    if (n === null || n === undefined) return "—";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let v = n, i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i ? v.toFixed(1) : String(v)) + " " + units[i];
  }

  function fmtDate(s) {
    if (!s) return "—";
    const d = new Date(s);
    return isNaN(d) ? String(s) : d.toISOString().replace("T", " ").slice(0, 19) + " UTC";
  }

  function statusSpan(status) {
    return el("span", { class: "status status-" + status, text: status });
  }

  function setRows(tbody, rows, empty, columns) {
    tbody.replaceChildren();
    if (!rows.length) {
      tbody.append(el("tr", null, el("td", { colspan: columns, class: "hint", text: empty })));
    }
    for (const r of rows) tbody.append(r);
  }

  function progressCell(fraction) {
    const pct = Math.round(fraction * 1000) / 10;
    return el("td", null, el("progress", { max: 1, value: fraction }), " " + pct + "%");
  }

  function spaceRow(s, withSizes) {
    const row = el("tr", { dataset: { space: s.id, status: s.status } },
      el("td", { text: s.model }), el("td", null, statusSpan(s.status)),
      progressCell(s.progress), el("td", { text: s.embedded }));
    if (withSizes) {
      row.append(el("td", { text: fmtBytes(s.table_bytes) }),
                 el("td", { text: fmtBytes(s.index_bytes) }));
    }
    return row;
  }

  /* Write and admin controls are served hidden and shown here once the key's scope allows
   * them: served visible, the upload zone and the migrate and rollback buttons stayed in
   * front of a read key whenever GET /v1/me failed or had not answered yet. A key limited
   * to one collection writes only there: on another collection's page it was shown the
   * upload zone, and every file it dropped was refused. */
  function applyScope(me) {
    const admin = me.scope === "admin";
    const ours = !me.collection || !COLLECTION || me.collection === COLLECTION;
    const write = (admin || me.scope === "write") && ours;
    for (const n of document.querySelectorAll(".admin-only")) n.hidden = !admin;
    for (const n of document.querySelectorAll(".write-only")) n.hidden = !write;
    const who = $("whoami");
    if (!me.auth) {
      who.textContent = "auth off · admin";
    } else {
      const parts = ["key " + me.key_id];
      if (me.name) parts.push(" (", iso(me.name), ")");
      parts.push(" · " + me.scope);
      if (me.collection) parts.push(" · only " + me.collection);
      who.replaceChildren(...parts);
    }
  }

  /* --- pages ---------------------------------------------------------------------- */

  function pageLogin() {
    const form = $("login-form");
    if (!form) return;  // authentication is off: nothing to sign in to
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearError("login-error");
      const input = $("api-key");
      const key = input.value.trim();
      try {
        await api("GET", "/v1/me", undefined, key);
      } catch (err) {
        showError("login-error", err);
        return;
      }
      sessionStorage.setItem(KEY, key);
      input.value = "";
      location.assign(pageAsked());
    });
  }

  /* Where a sign-in goes: the console page that sent the user to sign in (its ?next=),
   * else the collections. It went to the collections always, and the page asked for (a
   * link to a document, a search) was lost. Only a console page of this origin is taken:
   * anything else (another site, a path outside the console) goes to the collections. */
  function pageAsked() {
    const asked = new URLSearchParams(location.search).get("next") || "";
    let target = null;
    try { target = new URL(asked, location.origin); } catch (e) { target = null; }
    if (asked.startsWith("/") && target && target.origin === location.origin &&
        target.pathname.startsWith(rooted("/ui/")) && target.pathname !== rooted("/ui/login")) {
      return target.pathname + target.search + target.hash;
    }
    return rooted("/ui/collections");
  }

  async function pageCollections(me) {
    const tbody = $("collections-body");
    const dialog = $("delete-dialog");
    let deleting = "";

    /* Each row's stats are read once the row comes near the screen, at most STATS_AT_ONCE
     * requests at a time. Read for every collection at once, a page of hundreds sent
     * hundreds of requests together: they spent the key's rate limit (every later request
     * of the page was refused with 429) and loaded the server for rows nobody looked at.
     * A 429 says when to retry and holds the queue until then; the row is read again. */
    const STATS_AT_ONCE = 4;
    let statsQueue = [];  // rows' readers, in the order their rows came into view
    let statsRunning = 0;
    let statsHeldUntil = 0;  // Date.now() before which nothing is sent (a 429's Retry-After)
    let statsTimer = null;
    let listing = 0;  // bumped by each load(): a reader of an older listing is dropped
    const readers = new WeakMap();  // row -> its stats reader
    const seen = new IntersectionObserver((entries) => {
      for (const entry of entries) {
        if (!entry.isIntersecting) continue;
        seen.unobserve(entry.target);
        statsQueue.push(readers.get(entry.target));
      }
      pumpStats();
    }, { rootMargin: "200px 0px" });

    function pumpStats() {
      const wait = statsHeldUntil - Date.now();
      if (wait > 0) {
        if (statsTimer === null) {
          statsTimer = setTimeout(() => { statsTimer = null; pumpStats(); }, wait);
        }
        return;
      }
      while (statsRunning < STATS_AT_ONCE && statsQueue.length) {
        const read = statsQueue.shift();
        statsRunning += 1;
        read().finally(() => { statsRunning -= 1; pumpStats(); });
      }
    }

    function statsReader(name, generation, spaces, sizes, last) {
      const read = async () => {
        if (generation !== listing) return;  // its row was replaced by a newer listing
        let s;
        try {
          s = await api("GET", "/v1/collections/" + enc(name) + "/stats");
        } catch (err) {
          if (generation !== listing) return;
          spaces.textContent = problemText(err);
          if (err instanceof ApiError && err.status === 429) {
            const wait = Math.max(1, err.retryAfter !== null ? err.retryAfter : 5) * 1000;
            statsHeldUntil = Math.max(statsHeldUntil, Date.now() + wait);
            statsQueue.unshift(read);  // read again once the wait is over
          }
          return;
        }
        spaces.replaceChildren();
        for (const sp of s.spaces) {
          spaces.append(el("div", null, iso(sp.model), " ", statusSpan(sp.status),
                           sp.status === "building" ? " " + Math.round(sp.progress * 100) + "%" : ""));
        }
        const total = s.spaces.reduce((a, sp) => a + sp.table_bytes + sp.index_bytes, 0);
        sizes.textContent = fmtBytes(total) + " in " + s.spaces.length + " space(s)";
        last.textContent = fmtDate(s.last_ingest);
      };
      return read;
    }

    async function load() {
      const generation = ++listing;
      const list = await allCollections();
      if (generation !== listing) return;  // a newer listing was asked for meanwhile
      seen.disconnect();
      statsQueue = [];
      const rows = list.data.map((c) => {
        const spaces = el("td", { class: "spaces", text: "…" });
        const sizes = el("td", { class: "sizes", text: "…" });
        const last = el("td", { class: "last-ingest", text: "…" });
        const actions = el("td", { class: "admin-only" });
        actions.hidden = me.scope !== "admin";
        actions.append(el("button", { type: "button", class: "delete", dataset: { name: c.name },
                                      text: "Delete…", onclick: () => askDelete(c.name) }));
        const row = el("tr", { dataset: { collection: c.name } },
          el("td", null, el("a", { href: rooted("/ui/collections/" + enc(c.name)), text: c.name })),
          el("td", { text: c.documents }), el("td", { text: c.chunks }),
          el("td", { text: c.model }), spaces, sizes, last, actions);
        readers.set(row, statsReader(c.name, generation, spaces, sizes, last));
        return row;
      });
      setRows(tbody, rows, "No collections yet.", 8);
      for (const row of rows) seen.observe(row);
    }

    /* The listing after a write that was done: a failure of its own is said, as after an
     * upload (uploadAll). It was a rejection nobody caught: the list stayed as before the
     * write (a deleted collection still listed, a created one missing, so that creating
     * it again said "already exists") and nothing said why. */
    async function reload(done) {
      try {
        await load();
      } catch (err) {
        if (!$("sign-in-again")) {
          showError("page-error", done + ", but the list could not be refreshed: " +
                    problemText(err) + "; reload the page");
        }
      }
    }

    function askDelete(name) {
      deleting = name;
      $("delete-name").textContent = name;
      $("delete-confirm").value = "";
      clearError("delete-error");
      dialog.showModal();
    }

    /* While the delete is on its way the dialog stays open (Cancel disabled, Escape
     * refused): it cannot be called back, and a Cancel that let it go on said the
     * opposite. Should the dialog close all the same (Chromium closes it on a second
     * Escape), the answer is shown on the page: an error that arrived after the dialog
     * had closed was written into the closed dialog, seen by nobody, and the user took
     * the delete for done. */
    let deleteInFlight = false;
    dialog.addEventListener("cancel", (ev) => { if (deleteInFlight) ev.preventDefault(); });
    $("delete-cancel").addEventListener("click", () => { if (!deleteInFlight) dialog.close(); });
    $("delete-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      if (deleteInFlight) return;
      clearStaleErrors("create-error", "delete-error");
      const name = deleting;  // askDelete may change it while the request runs
      if ($("delete-confirm").value !== name) {
        showError("delete-error", "Type the collection's name exactly to delete it.");
        return;
      }
      deleteInFlight = true;  // one request per confirmation, as for create
      $("delete-submit").disabled = true;
      $("delete-cancel").disabled = true;
      const stillAsking = () => dialog.open && deleting === name;
      try {
        await api("DELETE", "/v1/collections/" + enc(name));
      } catch (err) {
        if (stillAsking()) {
          showError("delete-error", writeError(err, "collection " + name + " was deleted"));
        } else {
          showError("page-error", outcomeUnknown(err)
            ? writeError(err, "collection " + name + " was deleted")
            : "Collection " + name + " was not deleted: " + problemText(err));
        }
        if (outcomeUnknown(err)) load().catch(() => undefined);
        return;
      } finally {
        deleteInFlight = false;
        $("delete-submit").disabled = false;
        $("delete-cancel").disabled = false;
      }
      if (stillAsking()) dialog.close();
      await reload("collection " + name + " was deleted");
    });
    /* Offered to every key that may create a collection, as the API decides (a write or
     * admin key; one limited to a collection, that collection alone): it was shown to
     * admin keys only, and a write key had to use the API for what it was allowed. */
    const ownName = me.collection || "";
    if (ownName) {
      $("create-name").value = ownName;
      $("create-name").readOnly = true;
    }
    /* The button is disabled while the request runs: a double click sent two, and the
     * second one's "already exists" was shown as if the create had failed. */
    const createButton = $("create-form").querySelector("button[type=submit]");
    $("create-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      if (createButton.disabled) return;  // Enter pressed while one is on its way
      clearStaleErrors("create-error");
      const payload = { name: $("create-name").value.trim() };
      const model = $("create-model").value.trim();
      if (model) payload.model = model;
      createButton.disabled = true;
      try {
        await api("POST", "/v1/collections", payload);
      } catch (err) {
        showError("create-error", writeError(err, "collection " + payload.name + " was created"));
        if (outcomeUnknown(err)) load().catch(() => undefined);
        return;
      } finally {
        createButton.disabled = false;
      }
      $("create-name").value = ownName;
      await reload("collection " + payload.name + " was created");
    });
    await load();
  }

  async function pageCollection() {
    const base = "/v1/collections/" + enc(COLLECTION);
    let cursor = null;

    async function loadStats() {
      const s = await api("GET", base + "/stats");
      const facts = [["Model", s.model], ["Dimension", s.dimension], ["Distance", s.distance],
                     ["Documents", s.documents], ["Chunks", s.chunks],
                     ["Last ingest", fmtDate(s.last_ingest)], ["Created", fmtDate(s.created_at)]];
      for (const t of s.shared_tables) {
        facts.push(["Table " + t.table + " (shared)",
                    fmtBytes(t.table_bytes) + " + " + fmtBytes(t.index_bytes) + " indexes"]);
      }
      $("stats-facts").replaceChildren(...facts.flatMap(([k, v]) =>
        [el("dt", { text: k }), el("dd", { text: v })]));
      setRows($("spaces-body"), s.spaces.map((sp) => spaceRow(sp, true)), "No spaces.", 6);
    }

    async function loadJobs() {
      const jobs = await api("GET", "/v1/jobs?limit=20&collection=" + enc(COLLECTION));
      setRows($("jobs-body"), jobs.data.map((j) => el("tr", { dataset: { job: j.id } },
        el("td", { text: j.id }), el("td", null, statusSpan(j.status)),
        el("td", { text: j.documents_done + " / " + j.total_documents }),
        el("td", { text: j.chunks_done }),
        el("td", { text: j.errors.length ? j.errors.length + ": " + (j.errors[0].document || "") +
                   " " + (j.errors[0].detail || "") : "none" }),
        el("td", { text: fmtDate(j.created_at) }))), "No jobs.", 6);
    }

    /* A listing (more false) starts over with the filter as typed; "More" goes on with the
     * listing's own filter, one page at a time (the button is disabled while its page is
     * on its way), and an answer that a newer listing has overtaken is dropped. A double
     * click on "More" sent the same cursor twice and appended its page twice, and a
     * prefix typed but not yet submitted was mixed into the last listing's next page. */
    let listing = 0;  // bumped by each listing; a page of an older one is stale
    let listedPrefix = "";
    async function loadDocuments(more) {
      const moreButton = $("documents-more");
      if (more && (moreButton.disabled || !cursor)) return;
      const generation = more ? listing : ++listing;
      if (!more) listedPrefix = $("source-prefix").value.trim();
      const params = new URLSearchParams({ limit: "50" });
      if (listedPrefix) params.set("source_prefix", listedPrefix);
      if (more) params.set("cursor", cursor);
      let page;
      moreButton.disabled = true;
      try {
        page = await api("GET", base + "/documents?" + params.toString());
      } finally {
        if (generation === listing) moreButton.disabled = false;
      }
      if (generation !== listing) return;
      const rows = page.data.map((d) => el("tr", { dataset: { document: d.id } },
        el("td", null, el("a", { href: rooted("/ui/collections/" + enc(COLLECTION) + "/documents/" + d.id),
                                 text: d.name })),
        el("td", { text: d.title || "" }), el("td", { text: d.format }),
        el("td", { text: d.chunks }), el("td", { text: d.size_bytes }),
        el("td", { text: fmtDate(d.updated_at) })));
      if (more) {
        for (const r of rows) $("documents-body").append(r);
      } else {
        setRows($("documents-body"), rows, "No documents.", 6);
      }
      cursor = page.next_cursor;
      $("documents-more").hidden = !cursor;
    }

    function outcome(node, status, text) {
      node.className = "outcome status-" + status;
      node.textContent = text;
    }

    /* Uploads are named by their path inside what was dropped or chosen: a file taken as
     * given keeps its own name, and a folder is walked as `ragstore ingest` walks one
     * (hidden entries and files of a kind ragstore does not read are skipped, and said so)
     * with each file named by its path from the folder on. Named by base name alone, two
     * README.md files of different folders were stored as one document, the second
     * replacing the first, and a dropped folder was sent as an empty file. */
    const SUFFIXES = new Set(($("drop-zone").dataset.suffixes || "").split(" ").filter(Boolean));

    function readable(name) {
      const dot = name.lastIndexOf(".");
      return !name.startsWith(".") && dot > 0 && SUFFIXES.has(name.slice(dot).toLowerCase());
    }

    function entryFile(entry) {
      return new Promise((resolve, reject) => entry.file(resolve, reject));
    }

    function entryChildren(folder) {  // a folder's reader hands it over in batches, then []
      const reader = folder.createReader();
      const all = [];
      return new Promise((resolve, reject) => {
        const more = () => reader.readEntries((batch) => {
          if (!batch.length) { resolve(all); return; }
          all.push(...batch);
          more();
        }, reject);
        more();
      });
    }

    async function walk(folder, picked) {
      const children = await entryChildren(folder);
      children.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      for (const child of children) {
        const name = child.fullPath.replace(/^\/+/, "");
        if (child.isDirectory && !child.name.startsWith(".")) await walk(child, picked);
        else if (child.isFile && readable(child.name)) {
          picked.files.push({ file: await entryFile(child), name: name });
        } else picked.skipped += 1;
      }
    }

    /* The entries must be taken while the drop event runs; a DataTransfer made by a
     * script has none, and its files are then taken as given. */
    async function dropped(dt) {
      const entries = Array.from(dt.items || [])
        .filter((item) => item.kind === "file")
        .map((item) => (item.webkitGetAsEntry ? item.webkitGetAsEntry() : null));
      const picked = { files: [], skipped: 0 };
      if (!entries.length || entries.some((e) => !e)) {
        picked.files = Array.from(dt.files).map((f) => ({ file: f, name: f.name }));
        return picked;
      }
      for (const entry of entries) {
        if (entry.isDirectory) await walk(entry, picked);
        else picked.files.push({ file: await entryFile(entry), name: entry.name });
      }
      return picked;
    }

    function chosenFolder(files) {  // <input webkitdirectory>: every file, with its path
      const picked = { files: [], skipped: 0 };
      for (const f of files) {
        const parts = f.webkitRelativePath.split("/");
        if (parts.some((p) => p.startsWith(".")) || !readable(parts[parts.length - 1])) {
          picked.skipped += 1;
        } else picked.files.push({ file: f, name: f.webkitRelativePath });
      }
      picked.files.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      return picked;
    }

    /* A file queued as a background job (202) is followed to the job's end, so its line
     * says what became of it: left at "queued", a file the job then failed to read was a
     * failure nobody was told of. The look is less frequent as the job runs longer (one
     * second, then up to 15), and a 429 or 503 is waited out, so that a folder of large
     * files does not spend the key's rate limit. */
    async function followJob(result, id) {
      let job;
      for (let wait = 1000; ; wait = Math.min(wait * 1.5, 15000)) {
        await new Promise((r) => setTimeout(r, wait));
        try {
          job = await api("GET", "/v1/jobs/" + enc(id));
        } catch (err) {
          if (err instanceof ApiError && (err.status === 429 || err.status === 503)) continue;
          outcome(result, "unknown", "queued as job " + id + "; its state could not be read: " +
                  problemText(err));
          return;
        }
        if (job.status === "succeeded" || job.status === "failed") break;
        outcome(result, job.status, job.status + " as job " + id);
      }
      if (job.errors.length) {
        const e = job.errors[0];
        outcome(result, "failed", "failed in job " + id + ": " + (e.detail || "") +
                (e.code ? " (" + e.code + ")" : ""));
      } else {
        const done = Object.keys(job.summary).filter((k) => k !== "embedded" && k !== "reused" &&
                                                             job.summary[k]);
        outcome(result, job.status === "succeeded" ? (done[0] || "succeeded") : "failed",
                (done[0] || job.status) + " in job " + id + ": " + job.chunks_done + " chunks");
      }
      /* As after an upload (uploadAll): a refresh that failed left the jobs, documents and
       * counts as before the job ended, and nothing said why. A key refused meanwhile has
       * said so already (keyRefused), and that stays. */
      try {
        await Promise.all([loadStats(), loadJobs(), loadDocuments(false)]);
      } catch (err) {
        if (!$("sign-in-again")) {
          showError("page-error", "job " + id + " has ended (its outcome is listed below), " +
                    "but the page could not be refreshed to show it: " + problemText(err) +
                    "; reload the page to see it");
        }
      }
    }

    /* An Idempotency-Key for one file of one upload (a drop, a pick): a server that queues
     * the request as a job (background, or over its RAGSTORE_BACKGROUND_INGEST_BYTES)
     * answers the same request sent again with the job the first one queued, where
     * without it a request that arrived twice queued two jobs storing the same file.
     * Drawn anew per file and user action and kept by a resend of that request;
     * getRandomValues, not randomUUID, which a page served over plain HTTP lacks. */
    function idempotencyKey() {
      const bytes = crypto.getRandomValues(new Uint8Array(16));
      return "console-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    }

    function uploadOne(file, name, idemKey) {
      const bar = el("progress", { max: 1, value: 0 });
      const result = el("span", { class: "outcome", text: "uploading…" });
      $("upload-list").append(el("li", { dataset: { file: name } },
        el("span", { class: "file-name", text: name }), bar, result));
      return new Promise((resolve) => {
        const xhr = new XMLHttpRequest();
        xhr.open("POST", rooted(base + "/documents/upload"));
        xhr.setRequestHeader("Accept", "application/json");
        const key = storedKey();
        if (key) xhr.setRequestHeader("Authorization", "Bearer " + key);
        xhr.setRequestHeader("Idempotency-Key", idemKey);
        xhr.upload.addEventListener("progress", (ev) => {
          if (ev.lengthComputable) bar.value = ev.loaded / ev.total;
        });
        xhr.addEventListener("load", () => {
          bar.value = 1;
          const data = answerOf(xhr.status, xhr.statusText, xhr.responseText);
          if (xhr.status === 201) {
            const d = data.data[0];
            outcome(result, d.status || "added", (d.status || "added") + ": " + d.chunks + " chunks");
          } else if (xhr.status === 202) {
            outcome(result, "queued", "queued as job " + data.id);
            followJob(result, data.id);
          } else if ((xhr.status === 502 || xhr.status === 504) && !data.code) {
            /* A proxy's answer in the server's place, as outcomeUnknown() reads it for
             * the other writes: the server may have stored the file, and "failed" said it
             * had not (and invited a retry). */
            outcome(result, "unknown", "no answer from the server (HTTP " + xhr.status +
                    " from a proxy in front of it), so whether the file was stored is " +
                    "unknown; reload the page to see");
          } else {
            outcome(result, "failed", "failed: " + (data.detail || data.title || "HTTP " + xhr.status) +
                    (data.code ? " (" + data.code + ")" : ""));
            if (xhr.status === 401 && AUTH) {  // after its line: the page stays (keyRefused)
              keyRefused(data.detail || "HTTP 401");
              resolve("refused");
              return;
            }
          }
          resolve("answered");
        });
        /* No answer is not a failure: the server may have stored the file and lost the
         * connection before answering, so "failed" could be false (and invite a retry that
         * the user then reads as a second copy). */
        xhr.addEventListener("error", () => {
          outcome(result, "unknown", "no answer: the connection to the server broke, so " +
                  "whether the file was stored is unknown; reload the page to see");
          resolve("unknown");
        });
        const form = new FormData();
        form.append("files", file, name);
        xhr.send(form);
      });
    }

    /* Leaving the page while files are being sent asks first: the file on its way was cut
     * off and the files queued behind it were never sent, and nothing said so (a folder of
     * twenty files, the user on the search page after the third, had three stored). */
    let uploading = 0;
    window.addEventListener("beforeunload", (ev) => {
      if (!uploading || signingOut) return;
      ev.preventDefault();
      ev.returnValue = "";  // Chromium asks only when this is set
    });

    async function uploadAll(picked) {
      if (!picked.files.length && !picked.skipped) {  // an empty folder: said, not ignored
        $("upload-list").append(el("li", { class: "skipped",
          text: "nothing to upload: the dropped folder holds no files" }));
        return;
      }
      clearStaleErrors();
      uploading += 1;  // until every file is sent and answered, not during the refresh
      let sent;
      try {
        sent = await uploadPicked(picked);
      } finally {
        uploading -= 1;
      }
      if (!sent) return;  // the key was refused: a refresh would be refused too
      /* A refresh that failed was a rejection nobody caught: the counts, jobs and documents
       * stayed as before the upload and nothing said why. A key refused meanwhile has
       * said so already (keyRefused), and that stays. */
      try {
        await Promise.all([loadStats(), loadJobs(), loadDocuments(false)]);
      } catch (err) {
        if (!$("sign-in-again")) {
          showError("page-error", "the uploads' outcomes are listed below, but the page " +
                    "could not be refreshed to show them: " + problemText(err) +
                    "; reload the page to see them");
        }
      }
    }

    function notSent(name, why) {
      $("upload-list").append(el("li", { dataset: { file: name } },
        el("span", { class: "file-name", text: name }),
        el("span", { class: "outcome status-failed", text: why })));
    }

    async function uploadPicked(picked) {
      if (picked.skipped) {
        $("upload-list").append(el("li", { class: "skipped", text: "skipped " + picked.skipped +
          " hidden file(s) or file(s) of a kind ragstore does not read" }));
      }
      const seen = new Set();
      let refused = false;
      for (const f of picked.files) {  // one at a time: gentle on the server
        if (refused) {  // the key was refused: each file left is said to be not sent
          notSent(f.name, "not sent: the server refused the key before this file's turn; " +
                  "sign in again and upload it again");
          continue;
        }
        if (seen.has(f.name)) {  // files of two folders dropped as files: the later would replace
          notSent(f.name, "failed: another file of this upload has the same name and would " +
                  "be replaced; drop their folders instead");
          continue;
        }
        seen.add(f.name);
        refused = (await uploadOne(f.file, f.name, idempotencyKey())) === "refused";
      }
      return !refused;  // whether every file was sent (false: the key was refused)
    }

    function pickFailed(err) {
      $("upload-list").append(el("li", { class: "outcome status-failed",
        text: "failed: the dropped files could not be read (" + err.message + ")" }));
    }

    const zone = $("drop-zone");
    zone.addEventListener("dragover", (ev) => { ev.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (ev) => {
      ev.preventDefault();
      zone.classList.remove("over");
      if (ev.dataTransfer && ev.dataTransfer.files.length) {
        dropped(ev.dataTransfer).then(uploadAll, pickFailed);
      }
    });
    const input = $("file-input");
    input.addEventListener("change", () => {
      const files = Array.from(input.files).map((f) => ({ file: f, name: f.name }));
      input.value = "";
      if (files.length) uploadAll({ files: files, skipped: 0 });
    });
    const folderInput = $("folder-input");
    folderInput.addEventListener("change", () => {
      const picked = chosenFolder(Array.from(folderInput.files));
      folderInput.value = "";
      if (picked.files.length || picked.skipped) uploadAll(picked);
    });
    $("filter-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      clearStaleErrors();
      loadDocuments(false).catch((err) => showError("page-error", err));
    });
    $("documents-more").addEventListener("click", () => {
      clearStaleErrors();
      loadDocuments(true).catch((err) => showError("page-error", err));
    });
    await Promise.all([loadStats(), loadJobs(), loadDocuments(false)]);
  }

  async function pageDocument() {
    const base = "/v1/collections/" + enc(COLLECTION) + "/documents/" + enc(DOCUMENT);
    const d = await api("GET", base);
    $("page-title").textContent = d.name;
    const facts = [["Source", d.source], ["Title", d.title || "—"], ["Format", d.format],
                   ["Size", d.size_bytes + " bytes"], ["Chunks", d.chunks],
                   ["Content hash", d.content_hash], ["Metadata", shownJson(d.metadata)],
                   ["Updated", fmtDate(d.updated_at)]];
    $("document-facts").replaceChildren(...facts.flatMap(([k, v]) =>
      [el("dt", { text: k }), el("dd", { text: v })]));
    let after = null;
    /* One page at a time: "More" is disabled while its page is on its way (a double click
     * sent the same "after" twice and listed its chunks twice). */
    async function loadChunks() {
      const moreButton = $("chunks-more");
      if (moreButton.disabled) return;
      const q = "?limit=500" + (after !== null ? "&after=" + after : "");
      let page;
      moreButton.disabled = true;
      try {
        page = await api("GET", base + "/chunks" + q);
      } finally {
        moreButton.disabled = false;
      }
      for (const c of page.data) {
        const meta = ["#" + c.ordinal, c.chunk_type];
        if (c.section_path.length) meta.push(el("span", null, ...sectionPath(c.section_path)));
        if (c.page !== null) meta.push("page " + c.page);
        meta.push(c.token_count + " tokens");
        $("chunks-list").append(el("li", { dataset: { ordinal: c.ordinal, type: c.chunk_type } },
          el("div", { class: "meta" }, ...joined(meta, " · ")),
          el("div", { class: "text chunk-text", text: c.text })));
      }
      after = page.next_after;
      $("chunks-more").hidden = after === null;
    }
    $("chunks-more").addEventListener("click", () => {
      clearStaleErrors();
      loadChunks().catch((err) => showError("page-error", err));
    });
    await loadChunks();
  }

  function rankCell(part, what, searched) {
    if (!part) {
      const why = searched ? "not among the " + what + " candidates" : "no " + what + " list in this mode";
      return el("td", { class: "rank", title: why, text: "—" });
    }
    const detail = what === "vector" ? "distance " + part.distance.toFixed(4)
                                     : "bm25 " + part.bm25.toFixed(4);
    return el("td", { class: "rank", title: detail }, String(part.rank),
              el("div", { class: "meta", text: detail }));
  }

  function hitRow(h, i) {
    const ex = h.explain || {};
    const meta = [h.chunk_type, "chunk #" + h.ordinal];
    if (h.section_path.length) meta.unshift(el("span", null, ...sectionPath(h.section_path)));
    if (h.page !== null) meta.push("page " + h.page);
    const cell = el("td", { class: "hit" },
      el("a", { href: rooted("/ui/collections/" + enc(COLLECTION) + "/documents/" + h.document_id),
                text: h.title || h.name || h.source }),
      el("div", { class: "meta" }, ...joined(meta, " · ")),
      el("div", { class: "text hit-text", text: h.text }));
    if (h.context && h.context.length) {
      const label = h.context_mode === "section" ? "Section context" : "Context";
      const details = el("details", { class: "context" },
        el("summary", { text: label + " (" + h.context.length + " chunks)" }));
      for (const c of h.context) {
        details.append(el("div", { class: "context-chunk" + (c.is_hit ? " hit" : "") },
          el("div", { class: "meta" }, "#" + c.ordinal + " · " + c.chunk_type,
             ...(c.section_path.length ? [" · ", ...sectionPath(c.section_path)] : [])),
          el("div", { class: "text", text: c.text })));
      }
      cell.append(details);
    }
    return el("tr", { dataset: { chunk: h.chunk_id } },
      el("td", { text: i + 1 }), el("td", { class: "score", text: h.score.toFixed(4) }),
      rankCell(ex.vector, "vector", ex.mode !== "fulltext"),
      rankCell(ex.fulltext, "full-text", ex.mode !== "vector"), cell);
  }

  /* The filters box as an object ({} when empty), or null once its error is shown. */
  function readWhere() {
    const raw = $("where").value.trim();
    if (!raw) return {};
    let where;
    try { where = JSON.parse(raw); } catch (e) {
      showError("where-error", "Filters are not valid JSON: " + e.message);
      return null;
    }
    if (where === null || typeof where !== "object" || Array.isArray(where)) {
      showError("where-error", 'Filters must be a JSON object, e.g. {"team": "ops"}');
      return null;
    }
    return where;
  }

  /* A field's clause added to the filters box: its first example value (a date range for
     a timestamp), so a click shows the syntax with a value the collection holds. The clause
     is defined as an own property: assigned, a metadata field named "__proto__" set the
     object's prototype instead, and the click left the filters box unchanged, silently. */
  function addClause(field, value) {
    clearError("where-error");
    const where = readWhere();
    if (where === null) return;
    Object.defineProperty(where, field,
      { value: value, enumerable: true, writable: true, configurable: true });
    $("where").value = JSON.stringify(where);
    $("where").focus();
  }

  function fieldRow(me, name, type, carried, examples, indexed, value, about, indexable) {
    const button = el("button", { type: "button", class: "link", title: "Add to the filters",
                                  dataset: { field: name }, onclick: () => addClause(name, value) },
                      name);
    const index = el("td", { text: indexed.length ? indexed.join(", ")
                                                   : (indexable.length ? "" : "—") });
    for (const kind of indexable) {  // an admin of every collection may index the field
      index.append(" ", el("button", {
        type: "button", class: "index-field", dataset: { indexField: name, kind: kind },
        title: "Index this field's " + kind + " values for range filters ($gt, $lt, ...), " +
               "in every collection",
        onclick: (ev) => indexField(ev.target, name, kind, me) }, "index " + kind + "s"));
    }
    return el("tr", { title: about || null },
      el("td", {}, button), el("td", { text: type }), el("td", { text: carried }),
      el("td", { class: "meta", text: examples.map((x) => shownJson(x)).join(", ") }),
      index);
  }

  async function indexField(button, field, kind, me) {
    clearError("fields-error");
    button.disabled = true;
    button.textContent = "indexing…";
    try {
      await api("POST", "/v1/field-indexes", { field: field, type: kind });
    } catch (err) {
      showError("fields-error", writeError(err, "field " + field + " was indexed"));
      button.disabled = false;
      button.textContent = "index " + kind + "s";
      return;
    }
    await loadFields(me);
  }

  /* The fields panel; ``me`` (GET /v1/me) decides whether fields get index buttons. */
  async function loadFields(me) {
    clearError("fields-error");
    let res;
    try {
      res = await api("GET", "/v1/collections/" + enc(COLLECTION) + "/fields");
    } catch (err) {
      showError("fields-error", err);
      return false;
    }
    const rows = res.builtins.map((b) => {
      const value = b.type === "timestamp" ? { $gte: new Date().toISOString().slice(0, 10) }
                                           : (b.values && b.values.length ? b.values[0] : "");
      return fieldRow(me, b.field, b.type, "every chunk", b.values || [], [], value, b.about, []);
    });
    for (const m of res.metadata) {
      const carried = m.documents + " documents · " + m.chunks + " chunks";
      // only a bare path is indexed (both tables): not one listed as document.KEY or
      // chunk.KEY (a key named like a built-in), which POST /v1/field-indexes refuses
      // (the field escapes a dot or backslash within a key: "v1.2" is v1\.2)
      const path = m.keys && m.keys
        .map((k) => k.replace(/\\/g, "\\\\").replace(/\./g, "\\."))
        .join(".");
      const bare = !m.keys || path === m.field;
      const indexable = me.scope === "admin" && !me.collection && bare
        ? ["number", "string"].filter((k) => m.types.includes(k) && !m.indexed.includes(k))
        : [];
      rows.push(fieldRow(me, m.field, m.types.join(" | "), carried, m.examples, m.indexed,
                         m.examples.length ? m.examples[0] : "", null, indexable));
    }
    $("fields-body").replaceChildren(...rows);
    $("fields-table").hidden = false;
    $("fields-summary").textContent = res.metadata.length + " metadata path(s) in the latest " +
      res.sampled.documents + " documents and " + res.sampled.chunks + " sampled chunks" +
      (res.truncated ? " (more than are listed)" : "") +
      (res.unfilterable && res.unfilterable.count
        ? "; " + res.unfilterable.count + " left out: " + res.unfilterable.reason : "") +
      ". Click a field to add it to the filters.";
    return true;
  }

  /* Only the latest search's answer is shown: each submit supersedes the one before (its
   * request is aborted and an answer that still arrives is dropped), and a failed search
   * clears the results shown. The submit button was disabled while a search ran, yet a
   * slow answer to an earlier search that arrived after a newer one's replaced the newer
   * results, and a failed search left the last results under its error, read as its own. */
  function pageSearch(me) {
    let fieldsLoaded = false;
    let searching = 0;  // bumped by each search; an answer to an older one is dropped
    let inFlight = null;  // the AbortController of the search on its way

    function clearResults() {
      $("search-summary").textContent = "";
      $("hits-body").replaceChildren();
      $("hits-table").hidden = true;
      $("plan").textContent = "";
      $("plan-details").hidden = true;
    }

    $("fields-details").addEventListener("toggle", async () => {
      if ($("fields-details").open && !fieldsLoaded) fieldsLoaded = await loadFields(me);
    });
    $("search-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearStaleErrors("where-error", "search-error", "fields-error");
      const generation = ++searching;
      if (inFlight) inFlight.abort();
      inFlight = null;
      const payload = { query: $("q").value, mode: $("mode").value,
                        k: Number($("k").value || 10), explain: true };
      const where = readWhere();
      if (where === null) {
        clearResults();  // results of other filters, under an error about these
        return;
      }
      if (Object.keys(where).length) payload.where = where;
      const ctx = $("context").value;
      if (ctx === "section") payload.context = "section";
      else if (ctx) payload.context = Number(ctx);
      const controller = new AbortController();
      inFlight = controller;
      $("search-summary").textContent = "Searching…";
      let res;
      try {
        res = await api("POST", "/v1/collections/" + enc(COLLECTION) + "/search", payload,
                        undefined, controller.signal);
      } catch (err) {
        if (generation !== searching) return;  // superseded: the newer search says its own
        inFlight = null;
        clearResults();
        const p = (err && err.problem) || {};
        const onWhere = p.code === "invalid_filter" ||
          (Array.isArray(p.errors) && p.errors.some((e) => String(e.loc).includes("where")));
        showError(onWhere ? "where-error" : "search-error", err);
        return;
      }
      if (generation !== searching) return;
      inFlight = null;
      $("search-summary").textContent = res.count + " hit(s) in " + res.took_ms.toFixed(1) +
        " ms, mode " + payload.mode;
      $("hits-body").replaceChildren(...res.data.map(hitRow));
      $("hits-table").hidden = false;
      $("plan").textContent = shownJson(res.plan, 2);
      $("plan-details").hidden = !res.plan;
    });
  }

  async function pageModels(me) {
    const select = $("migrate-collection");
    let polling = false;
    let pollings = 0;  // bumped by each migration: a look of an older one stops there

    async function loadModels() {
      const models = await api("GET", "/v1/models");
      setRows($("models-body"), models.data.map((m) => el("tr", { dataset: { model: m.name } },
        el("td", { text: m.name }), el("td", { text: m.revision }), el("td", { text: m.provider }),
        el("td", { text: m.dimension }), el("td", { text: m.distance }),
        el("td", null, el("code", { class: "checksum", text: m.checksum || "—" })),
        el("td", { text: m.collections.join(", ") || "—" }))), "No models pinned yet.", 7);
    }

    /* The spaces of the collection selected now: an answer for one selected before (a slow
     * one, overtaken by the switch) is dropped, not shown under the newer name. */
    async function loadSpaces() {
      const name = select.value;
      if (!name) return;
      let s;
      try {
        s = await api("GET", "/v1/collections/" + enc(name) + "/stats");
      } catch (err) {
        if (name !== select.value) return;
        throw err;
      }
      if (name !== select.value) return;
      $("active-model").textContent = s.model;
      setRows($("model-spaces-body"), s.spaces.map((sp) => spaceRow(sp, false)), "No spaces.", 4);
    }

    /* After a write: what the server says now. Its own failure is shown only where the
     * write left no message (a lost connection already says to reload). */
    async function refresh() {
      try {
        await Promise.all([loadSpaces(), loadModels()]);
      } catch (err) {
        if ($("migrate-error").hidden) showError("migrate-error", err);
      }
    }

    /* While a migration runs its spaces are looked at every 500 ms, each look sent once
     * the one before has been answered: on a set interval, a slow server had looks pile
     * up behind one another. */
    function startPolling() {
      const generation = ++pollings;
      polling = true;
      const look = () => {
        loadSpaces().catch(() => undefined).finally(() => {
          if (polling && generation === pollings) setTimeout(look, 500);
        });
      };
      look();  // the first look at once
    }

    function stopPolling() {
      polling = false;
    }

    const collections = await allCollections();
    select.replaceChildren(...collections.data.map((c) => el("option", { value: c.name, text: c.name })));
    /* No collection: no form. It was shown all the same, and its buttons sent
     * POST /v1/collections//model/... (an empty name), answered with a 404 on a path the
     * user never asked for. */
    const none = !collections.data.length;
    $("migrate-form").hidden = none;
    $("migrate-none").hidden = !none;
    select.addEventListener("change", () => {
      clearStaleErrors("migrate-error");  // said of the collection selected before
      loadSpaces().catch((err) => showError("migrate-error", err));
    });
    $("migrate-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearStaleErrors("migrate-error");
      const name = select.value;
      /* The model as typed (the box is required): an empty box migrated to the model shown
       * greyed as the box's example, which nobody had chosen. */
      const to = $("migrate-to").value.trim();
      if (!name || !to) {
        showError("migrate-error", !name ? "no collection to migrate"
                                         : "Type the model to migrate to.");
        return;
      }
      $("migrate-status").replaceChildren("Migrating " + name + " to ", iso(to), "…");
      $("migrate-start").disabled = true;
      try {
        const pending = api("POST", "/v1/collections/" + enc(name) + "/model/migrate", { to: to });
        startPolling();
        const r = await pending;
        $("migrate-status").replaceChildren(...(r.switched
          ? ["Switched " + name + " to ", iso(r.target), ": " + r.embedded +
             " chunks embedded in " + r.seconds.toFixed(1) + " s, sample self-recall " +
             r.sample_self_recall.toFixed(2) + "."]
          : ["Backfilled ", iso(r.target), " but did not switch: " + r.notes.join("; ")]));
      } catch (err) {
        $("migrate-status").textContent = "";
        showError("migrate-error", writeError(err, "the migration of " + name + " to " + to +
                                              " started or finished"));
      } finally {
        stopPolling();
        $("migrate-start").disabled = false;
      }
      await refresh();
    });
    /* Disabled while its request runs: each rollback switches to the model active before,
     * so a double click sent two and switched back to the model being rolled back. */
    $("rollback").addEventListener("click", async () => {
      clearStaleErrors("migrate-error");
      const name = select.value;
      if (!name) {
        showError("migrate-error", "no collection to roll back");
        return;
      }
      $("rollback").disabled = true;
      try {
        const r = await api("POST", "/v1/collections/" + enc(name) + "/model/rollback");
        $("migrate-status").replaceChildren("Rolled back " + name + ": ", iso(r.active),
          " is active again (was ", iso(r.previous), ").");
      } catch (err) {
        showError("migrate-error", writeError(err, name + " was rolled back"));
      } finally {
        $("rollback").disabled = false;
      }
      await refresh();
    });
    await Promise.all([loadModels(), loadSpaces()]);
    applyScope(me);
  }

  /* --- start ---------------------------------------------------------------------- */

  async function start() {
    if (PAGE === "login") {
      pageLogin();
      return;
    }
    if (AUTH && !storedKey()) {
      location.replace(signInHere());
      return;
    }
    const out = $("sign-out");
    if (out) out.addEventListener("click", signOut);
    const me = await api("GET", "/v1/me");
    applyScope(me);
    if (PAGE === "collections") await pageCollections(me);
    else if (PAGE === "collection") await pageCollection();
    else if (PAGE === "document") await pageDocument();
    else if (PAGE === "search") pageSearch(me);
    else if (PAGE === "models") await pageModels(me);
    body.dataset.ready = "true";  // tests and screenshots wait for this
  }

  start().catch((err) => showError("page-error", err));
})();
