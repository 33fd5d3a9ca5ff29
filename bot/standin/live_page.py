"""The live page's HTML, CSS and script (one static document; ``{{TITLE}}`` is replaced when served).

The script polls ``/ui/state`` and ``/ui/panel`` once a second and replaces only what changed; message HTML is
rendered and escaped on the server (:mod:`bot.standin.blockkit`), so the script inserts no text of its own making
from message content. Clicks and modal submissions go to ``/ui/act``, ``/ui/submit`` and ``/ui/close``.
"""

from __future__ import annotations

__all__ = ["LIVE_PAGE"]

_CSS = """
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#1d1c1d;
 background:#f8f8f8}
header{display:flex;align-items:center;gap:1em;padding:.55em 1em;background:#3f0e40;color:#fff}
header h1{font-size:16px;margin:0;font-weight:700}
header .who{margin-left:auto}
header select{font-size:13px}
#toast{font-size:12px;opacity:.85}
main{display:grid;grid-template-columns:minmax(0,1.35fr) minmax(0,1fr) 340px;gap:10px;padding:10px;
 height:calc(100vh - 44px)}
.pane{background:#fff;border:1px solid #ddd;border-radius:6px;display:flex;flex-direction:column;min-height:0}
.pane h2{font-size:15px;margin:0;padding:.55em .8em;border-bottom:1px solid #e5e5e5}
.pane h2 small{color:#868686;font-weight:400}
.messages{overflow-y:auto;padding:.3em .8em;flex:1}
.empty{color:#868686;font-style:italic;padding:1em 0}
.msg{padding:.55em .2em;border-bottom:1px solid #f0f0f0}
.msg.eph{background:#f4f8fb}
.msg-meta{margin-bottom:.2em}.author{font-weight:700}
.app{font-size:10px;background:#e8e8e8;color:#616061;border-radius:3px;padding:0 3px;margin-left:4px}
.time,.meta{color:#868686;font-size:12px}
.block{margin:.2em 0}.block-context{color:#616061;font-size:12px}
.fields{display:grid;grid-template-columns:1fr 1fr;gap:.2em 1em;margin-top:.3em}
code{background:#f2f2f2;border:1px solid #e3e3e3;border-radius:3px;padding:0 3px;color:#c01343;font-size:12px}
.mention{background:#e8f5fa;color:#1264a3;border-radius:3px;padding:0 2px}
.btn{font:inherit;font-size:13px;font-weight:600;border:1px solid #bbb;background:#fff;border-radius:4px;
 padding:.25em .8em;margin:.25em .4em .1em 0;cursor:pointer}
.btn:hover{background:#f4f4f4}.btn:disabled{opacity:.5;cursor:default}
.btn-primary{background:#007a5a;border-color:#007a5a;color:#fff}.btn-primary:hover{background:#148567}
.btn-danger{background:#e01e5a;border-color:#e01e5a;color:#fff}.btn-danger:hover{background:#c9184f}
.attachment{max-width:100%;border:1px solid #ddd;border-radius:4px;margin-top:.3em}
#overlay{position:fixed;inset:0;background:rgba(0,0,0,.45);display:flex;align-items:center;justify-content:center}
#overlay[hidden]{display:none}
.modal{background:#fff;border-radius:8px;width:520px;max-width:94vw;box-shadow:0 10px 30px rgba(0,0,0,.3)}
.modal-title{font-size:18px;font-weight:700;padding:.8em 1em;border-bottom:1px solid #e5e5e5}
.modal-body{padding:.6em 1em;max-height:60vh;overflow-y:auto}
.modal-body .block-input{margin:.7em 0}.modal-body label{display:block;font-weight:700;margin-bottom:.25em}
.modal-body select,.modal-body textarea,.modal-body input[type=text]{width:100%;font:inherit;padding:.35em;
 border:1px solid #bbb;border-radius:4px}
.error{color:#e01e5a;font-size:12px;margin-top:.2em}
.modal-actions{display:flex;justify-content:flex-end;gap:.3em;padding:.6em 1em;border-top:1px solid #e5e5e5}
#panel .body{padding:.6em .8em;overflow-y:auto}
#panel h3{font-size:13px;margin:.8em 0 .3em;text-transform:uppercase;color:#616061;letter-spacing:.03em}
.big{font-size:26px;font-weight:700}.sub{color:#616061;font-size:12px}
.kv{display:grid;grid-template-columns:auto auto;gap:.1em 1em;font-size:13px}.kv span:nth-child(even){text-align:right}
svg text{font-size:10px;fill:#616061}
"""

_SCRIPT = r"""
const params = new URLSearchParams(location.search);
let user = params.get('as') || '';
let shownModal = null;
let busy = false;
const $ = (id) => document.getElementById(id);
function toast(text) { $('toast').textContent = text; }
async function post(path, body) {
  const r = await fetch(path, {method: 'POST', headers: {'Content-Type': 'application/json'},
                               body: JSON.stringify(body)});
  let data = {};
  try { data = await r.json(); } catch (e) {}
  if (!r.ok) throw new Error(data.error || ('HTTP ' + r.status));
  return data;
}
function renderUsers(state) {
  const sel = $('user');
  const want = state.users.map(u => u.id).join(',');
  if (sel.dataset.users !== want) {
    sel.textContent = '';
    for (const u of state.users) {
      const o = document.createElement('option');
      o.value = u.id; o.textContent = u.name + ' (' + u.id + ')';
      sel.appendChild(o);
    }
    sel.dataset.users = want;
  }
  sel.value = state.user || '';
}
function renderChannels(state) {
  const root = $('channels');
  for (const ch of state.channels) {
    let pane = document.getElementById('ch-' + ch.id);
    if (!pane) {
      pane = document.createElement('section');
      pane.className = 'pane channel'; pane.id = 'ch-' + ch.id; pane.dataset.channel = ch.id;
      const h = document.createElement('h2');
      const list = document.createElement('div'); list.className = 'messages';
      pane.appendChild(h); pane.appendChild(list);
      root.insertBefore(pane, $('panel'));
    }
    pane.querySelector('h2').textContent = '# ' + ch.name + '  ';
    const small = document.createElement('small'); small.textContent = ch.id;
    pane.querySelector('h2').appendChild(small);
    const list = pane.querySelector('.messages');
    const html = ch.html || '<div class="empty">No messages yet.</div>';
    if (list.dataset.html !== html) {
      const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
      list.innerHTML = html;
      list.dataset.html = html;
      if (atBottom) list.scrollTop = list.scrollHeight;
    }
  }
}
function renderModal(state, force) {
  const overlay = $('overlay');
  if (!state.modal) { overlay.hidden = true; overlay.innerHTML = ''; shownModal = null; return; }
  if (force || shownModal !== state.modal.view_id) {
    overlay.innerHTML = state.modal.html;
    shownModal = state.modal.view_id;
  }
  overlay.hidden = false;
}
async function refresh(forceModal) {
  const r = await fetch('/ui/state' + (user ? '?as=' + encodeURIComponent(user) : ''));
  const state = await r.json();
  if (!user && state.user) user = state.user;
  renderUsers(state); renderChannels(state); renderModal(state, forceModal);
}
function line(points, w, h, maxY) {
  if (points.length < 2) return '';
  const xs = points.map(p => p[0]); const x0 = Math.min(...xs), x1 = Math.max(...xs) || 1;
  return points.map(p => ((p[0] - x0) / Math.max(1, x1 - x0) * (w - 30) + 25).toFixed(1) + ',' +
                         (h - 15 - p[1] / maxY * (h - 25)).toFixed(1)).join(' ');
}
function esc(s) { const d = document.createElement('div'); d.textContent = String(s); return d.innerHTML; }
function renderPanel(p) {
  const body = $('panel-body');
  if (!p || !Object.keys(p).length) { body.innerHTML = '<div class="empty">No panel.</div>'; return; }
  let h = '';
  if (p.status) h += '<div class="sub" id="panel-status">' + esc(p.status) + '</div>';
  const L = p.l_align || {};
  h += '<h3>Alignment loss L_align</h3><div class="big" id="l-align">' +
       (L.current == null ? '–' : Number(L.current).toFixed(3)) + '</div><div class="sub">' +
       esc(L.note || '') + '</div>';
  const W = 310, H = 120;
  h += '<svg width="' + W + '" height="' + H + '" id="l-chart"><line x1="25" y1="' + (H - 15) + '" x2="' + W +
       '" y2="' + (H - 15) + '" stroke="#ccc"/><line x1="25" y1="10" x2="25" y2="' + (H - 15) +
       '" stroke="#ccc"/><text x="0" y="14">1.0</text><text x="0" y="' + (H - 12) + '">0</text>';
  if (L.series && L.series.length > 1)
    h += '<polyline fill="none" stroke="#e01e5a" stroke-width="2" points="' + line(L.series, W, H, 1) + '"/>';
  h += '</svg>';
  if (p.tau && p.tau.length) {
    h += '<h3>Threshold τ — posterior (Thompson sampling)</h3><svg width="310" height="110" id="tau-chart">';
    const bw = 300 / p.tau.length;
    p.tau.forEach((t, i) => {
      const x = 8 + i * bw, y = (v) => 90 - v * 80;
      h += '<rect x="' + (x + bw * .2) + '" y="' + y(t.mean) + '" width="' + (bw * .6) + '" height="' +
           (90 - y(t.mean)) + '" fill="#1264a3" opacity=".75"/>' +
           '<line x1="' + (x + bw / 2) + '" x2="' + (x + bw / 2) + '" y1="' + y(t.hi) + '" y2="' + y(t.lo) +
           '" stroke="#1d1c1d"/><text x="' + (x + bw * .25) + '" y="104">τ=' + t.tau.toFixed(1) + '</text>' +
           '<text x="' + (x + bw * .25) + '" y="' + (y(t.mean) - 3) + '">' + t.mean.toFixed(2) + '</text>';
    });
    h += '</svg><div class="sub">bars: posterior mean reward of each τ, whiskers: 90 % interval</div>';
  }
  const F = p.f_monitor || {};
  h += '<h3>Meta-monitor</h3><div class="kv"><span>F_monitor</span><span id="f-monitor">' +
       (F.value == null ? '–' : Number(F.value).toFixed(2)) + '</span><span>monitor decisions</span><span>' +
       esc(F.decisions ?? 0) + '</span><span>open retraining proposal</span><span>' +
       (F.open_proposal ? 'yes' : 'no') + '</span></div>';
  if (p.counts) {
    h += '<h3>Counts</h3><div class="kv">';
    for (const [k, v] of Object.entries(p.counts)) h += '<span>' + esc(k) + '</span><span>' + esc(v) + '</span>';
    h += '</div>';
  }
  body.innerHTML = h;
}
async function refreshPanel() {
  try { renderPanel(await (await fetch('/ui/panel')).json()); } catch (e) {}
}
function modalValues(modal) {
  const values = {};
  for (const el of modal.querySelectorAll('[data-block-id][data-action-id]')) {
    if (el.tagName === 'BUTTON') continue;
    const b = el.dataset.blockId, a = el.dataset.actionId;
    let v;
    if (el.type === 'radio') { if (!el.checked) continue; v = el.value; }
    else v = el.value === '' ? null : el.value;
    (values[b] = values[b] || {})[a] = v;
  }
  return values;
}
document.addEventListener('click', async (ev) => {
  const btn = ev.target.closest('button');
  if (!btn || busy) return;
  try {
    if (btn.classList.contains('modal-submit')) {
      busy = true; btn.disabled = true;
      const r = await post('/ui/submit', {user, view_id: btn.dataset.viewId,
                                           values: modalValues(btn.closest('.modal'))});
      toast(r.closed ? 'Submitted (bot answered ' + r.status + ')' : 'Please fix the errors in the form');
      await refresh(true);
    } else if (btn.classList.contains('modal-close')) {
      await post('/ui/close', {user, view_id: btn.dataset.viewId});
      await refresh(true);
    } else if (btn.dataset.actionId) {
      const msg = btn.closest('.msg');
      if (!msg) return;
      busy = true; btn.disabled = true;
      const r = await post('/ui/act', {user, channel: msg.dataset.channel, ts: msg.dataset.ts,
                                        action_id: btn.dataset.actionId});
      toast('Clicked ' + btn.textContent.trim() + ': bot answered ' + r.status);
      await refresh(false);
    }
  } catch (e) { toast('Error: ' + e.message); }
  finally { busy = false; btn.disabled = false; }  // disabled only while in flight: a click that changes nothing
                                                   // (a cancelled modal) must leave the button clickable
});
$('user').addEventListener('change', (ev) => {
  user = ev.target.value; shownModal = null;
  history.replaceState(null, '', '?as=' + encodeURIComponent(user)); refresh(true);
});
async function loop() {
  try { await refresh(false); await refreshPanel(); $('conn').textContent = 'live'; }
  catch (e) { $('conn').textContent = 'disconnected'; }
  setTimeout(loop, 1000);
}
loop();
"""

LIVE_PAGE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1"><title>{{TITLE}}</title>'
    f"<style>{_CSS}</style></head><body>"
    '<header><h1>{{TITLE}}</h1><span id="conn" class="sub">connecting…</span><span id="toast"></span>'
    '<label class="who">You are <select id="user" aria-label="acting user"></select></label></header>'
    '<main id="channels"><aside class="pane" id="panel"><h2>Learning</h2>'
    '<div class="body" id="panel-body"></div></aside></main>'
    '<div id="overlay" hidden></div>'
    f"<script>{_SCRIPT}</script></body></html>"
)
