"""The status page's three static files (served by ``_status_page.py``).

The page builds every row with DOM calls and ``textContent``, never ``innerHTML``: node ids,
types and route keys come from nodes, so nothing a node sends is ever parsed as HTML. The
server also forbids inline scripts and every foreign origin (Content-Security-Policy).
"""

from __future__ import annotations

from typing import Final

HTML: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>actr-trio realm status</title>
<link rel="stylesheet" href="/status.css">
<script src="/status.js" defer></script>
</head>
<body>
<header>
  <h1>actr-trio realm status</h1>
  <label>realm <select id="realm"></select></label>
  <span id="state" class="state">connecting</span>
</header>
<main>
  <table id="nodes">
    <thead><tr>
      <th>node</th><th>type</th><th>since</th><th>heartbeat</th>
      <th>backlog</th><th>handled</th><th>handled/s</th><th>dead letters</th>
    </tr></thead>
    <tbody></tbody>
  </table>
  <p id="empty" hidden>No node of this realm is registered.</p>
  <section id="detail" hidden>
    <h2 id="detail-title"></h2>
    <div class="cards">
      <div><h3>Backlog per priority</h3><table id="detail-backlog"><tbody></tbody></table></div>
      <div><h3>Lanes</h3><table id="detail-lanes">
        <thead><tr><th>lane</th><th>peers</th><th>unacked</th></tr></thead><tbody></tbody>
      </table></div>
      <div><h3>Recent dead letters</h3><ol id="detail-dead"></ol></div>
    </div>
  </section>
</main>
</body>
</html>
"""

CSS: Final = """
body { font-family: system-ui, sans-serif; margin: 0; color: #1d232a; background: #f6f7f9; }
header { display: flex; gap: 1.5em; align-items: baseline; padding: .8em 1.5em;
         background: #20303f; color: #fff; }
header h1 { font-size: 1.2em; margin: 0; }
.state { font-size: .85em; opacity: .8; }
main { padding: 1em 1.5em; }
table { border-collapse: collapse; background: #fff; }
#nodes { width: 100%; }
th, td { padding: .35em .7em; border-bottom: 1px solid #e1e4e8; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
#nodes tbody tr { cursor: pointer; }
#nodes tbody tr:hover { background: #eef3f8; }
#nodes tbody tr.selected { background: #dbe8f5; }
.cards { display: flex; gap: 2em; flex-wrap: wrap; }
.stale { color: #b3261e; }
"""

JS: Final = """'use strict';
// Polls /api/nodes and redraws. Everything shown goes through textContent: node-supplied
// strings are never parsed as HTML.
const POLL_MS = 1000;
let selected = null;
let realm = new URLSearchParams(location.search).get('realm');

function cell(row, text, numeric) {
  const td = document.createElement('td');
  td.textContent = text === null || text === undefined ? '-' : String(text);
  if (numeric) td.className = 'num';
  row.appendChild(td);
  return td;
}

function age(seconds) {
  return seconds < 10 ? seconds.toFixed(1) + ' s ago' : Math.round(seconds) + ' s ago';
}

function since(unix) {
  return new Date(unix * 1000).toLocaleTimeString();
}

function replaceRows(tbody, rows) {
  while (tbody.firstChild) tbody.removeChild(tbody.firstChild);
  for (const row of rows) tbody.appendChild(row);
}

function drawNodes(nodes) {
  const rows = nodes.map((node) => {
    const tr = document.createElement('tr');
    tr.dataset.id = node.id;
    if (node.id === selected) tr.className = 'selected';
    cell(tr, node.id);
    cell(tr, node.type);
    cell(tr, since(node.since));
    const hb = cell(tr, age(node.heartbeat_age));
    if (node.heartbeat_age > 10) hb.classList.add('stale');
    cell(tr, node.pending, true);
    cell(tr, node.handled, true);
    cell(tr, node.handled_rate.toFixed(1), true);
    cell(tr, node.dead_letters, true);
    tr.addEventListener('click', () => { selected = node.id; drawDetail(nodes); });
    return tr;
  });
  replaceRows(document.querySelector('#nodes tbody'), rows);
  document.getElementById('empty').hidden = nodes.length > 0;
  drawDetail(nodes);
}

function drawDetail(nodes) {
  const node = nodes.find((n) => n.id === selected);
  const section = document.getElementById('detail');
  section.hidden = !node;
  for (const tr of document.querySelectorAll('#nodes tbody tr')) {
    tr.classList.toggle('selected', tr.dataset.id === selected);
  }
  if (!node) return;
  document.getElementById('detail-title').textContent = node.id;
  const backlog = Object.entries(node.backlog || {}).map(([priority, count]) => {
    const tr = document.createElement('tr');
    cell(tr, priority);
    cell(tr, count, true);
    return tr;
  });
  replaceRows(document.querySelector('#detail-backlog tbody'), backlog);
  const lanes = (node.lanes || []).map((lane) => {
    const tr = document.createElement('tr');
    cell(tr, lane.lane);
    cell(tr, lane.peers, true);
    cell(tr, lane.unacked, true);
    return tr;
  });
  replaceRows(document.querySelector('#detail-lanes tbody'), lanes);
  const dead = (node.recent_dead_letters || []).map((route) => {
    const li = document.createElement('li');
    li.textContent = route;
    return li;
  });
  replaceRows(document.getElementById('detail-dead'), dead);
}

function drawRealms(realms) {
  const select = document.getElementById('realm');
  const names = realms.slice();
  if (realm !== null && !names.includes(realm)) names.push(realm);
  if (realm === null && names.length) realm = names[0];
  const options = names.map((name) => {
    const option = document.createElement('option');
    option.value = name;
    option.textContent = name;
    option.selected = name === realm;
    return option;
  });
  replaceRows(select, options);
}

async function poll() {
  const state = document.getElementById('state');
  try {
    const realms = await (await fetch('/api/realms', {cache: 'no-store'})).json();
    drawRealms(realms.realms);
    if (realm !== null) {
      const query = '?realm=' + encodeURIComponent(realm);
      const answer = await (await fetch('/api/nodes' + query, {cache: 'no-store'})).json();
      drawNodes(answer.nodes);
    }
    state.textContent = 'updated ' + new Date().toLocaleTimeString();
  } catch (error) {
    state.textContent = 'server unreachable';
  }
  setTimeout(poll, POLL_MS);
}

document.addEventListener('DOMContentLoaded', () => {
  document.getElementById('realm').addEventListener('change', (event) => {
    realm = event.target.value;
    selected = null;
  });
  poll();
});
"""
