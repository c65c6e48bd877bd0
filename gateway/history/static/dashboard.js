// busgate dashboard: adds new messages from the live stream (Server-Sent Events) to the
// list, newest first, each id once, and counts each in the charts' bar of its hour (the
// charts are laid out again here as gateway/history/dashboard.py chart() does); every
// data-refresh ms (history.chart_refresh) the charts are re-read from /v2/activity, which
// moves them on at the turn of the hour and adds what a filtered stream does not carry.
// Builds every node with textContent (no HTML parsing of what messages say).
(function () {
  "use strict";
  var form = document.querySelector("form.filters");
  if (form) {
    form.addEventListener("submit", function () {
      // a shareable URL names only the filters given
      form.querySelectorAll("input").forEach(function (input) {
        if (!input.value.trim()) { input.disabled = true; }
      });
    });
  }
  var list = document.getElementById("messages");
  var status = document.getElementById("status");
  if (!list || !window.EventSource) {
    if (status) { status.textContent = "not live"; }
    return;
  }
  var keep = parseInt(list.getAttribute("data-keep"), 10) || 25;
  var seen = new Set();
  list.querySelectorAll("li[data-id]").forEach(function (li) { seen.add(li.getAttribute("data-id")); });

  function node(tag, cls, text) {
    var el = document.createElement(tag);
    if (cls) { el.className = cls; }
    if (text !== undefined) { el.textContent = text; }
    return el;
  }
  function link(cls, href, text) {
    var a = node("a", cls, text);
    a.href = href;
    return a;
  }
  function line(m) {
    var li = node("li", "msg fresh");
    li.setAttribute("data-id", String(m.id));
    var time = node("time", "", m.when);
    time.setAttribute("datetime", m.iso);
    li.append(time, " ", link("svc s" + m.colour, "/?category=" + encodeURIComponent(m.service), m.service), " ");
    if (m.url && /^https?:\/\//i.test(m.url)) {
      var a = link("sum", m.url, m.summary);
      a.rel = "noopener noreferrer";
      li.append(a);
    } else {
      li.append(node("span", "sum", m.summary));
    }
    var names = node("span", "names");
    m.packages.forEach(function (p) { names.append(link("pkg", "/package/" + encodeURIComponent(p), p), " "); });
    m.users.forEach(function (u) { names.append(link("user", "/user/" + encodeURIComponent(u), u), " "); });
    var raw = link("raw", "/id?id=" + encodeURIComponent(m.msg_id), "json");
    raw.title = "the message as JSON";
    names.append(raw);
    li.append(" ", names);
    return li;
  }
  function say(text, cls) {
    status.textContent = text;
    status.className = "status " + (cls || "");
  }

  // -- the charts -----------------------------------------------------------------------
  var SVG = "http://www.w3.org/2000/svg";
  var board = document.getElementById("charts");
  var charts = [];
  if (board) {
    board.querySelectorAll("figure.chart[data-chart]").forEach(function (fig) {
      charts.push({ fig: fig, data: JSON.parse(fig.getAttribute("data-chart")) });
    });
  }
  // the feed position the last re-read counts through: a live message at or before it
  // is in the re-read already (null: the page's own charts, whose stream starts after them)
  var counted = null;
  function position(token) {
    var parts = String(token).split("-");
    return parts.length === 2 ? [Number(parts[0]), Number(parts[1])] : [0, Number(parts[0])];
  }
  function later(a, b) { return a[0] > b[0] || (a[0] === b[0] && a[1] > b[1]); }
  function svgNode(tag, attrs) {
    var el = document.createElementNS(SVG, tag);
    Object.keys(attrs).forEach(function (k) { el.setAttribute(k, String(attrs[k])); });
    return el;
  }
  function round2(x) { return Math.round(x * 100) / 100; }
  function draw(chart) {
    var d = chart.data, width = 720, height = 150, pad = 22;
    var names = Object.keys(d.series), slots = d.slots || 1;
    var totals = {}, sums = [], top = 0, total = 0;
    names.forEach(function (n) { totals[n] = d.series[n].reduce(function (a, b) { return a + b; }, 0); });
    for (var i = 0; i < slots; i++) {
      var sum = 0;
      names.forEach(function (n) { sum += d.series[n][i] || 0; });
      sums.push(sum);
      top = Math.max(top, sum);
      total += sum;
    }
    top = top || 1;
    var step = (width - 2) / slots;
    var order = names.slice().sort(function (a, b) {
      return totals[b] - totals[a] || (a < b ? -1 : a > b ? 1 : 0);
    });
    var svg = chart.fig.querySelector("svg");
    svg.querySelectorAll("rect, text.tick").forEach(function (el) { el.remove(); });
    for (var slot = 0; slot < slots; slot++) {
      var y = height - pad;
      var when = new Date((d.start + slot * d.bucket) * 1000).toISOString().slice(0, 16).replace("T", " ");
      order.forEach(function (name) {
        var n = d.series[name][slot] || 0;
        if (!n) { return; }
        var h = n / top * (height - pad - 4);
        y -= h;
        var rect = svgNode("rect", { "class": "s" + d.colours[name], x: round2(1 + slot * step),
          y: round2(y), width: round2(Math.max(step - 1, 0.5)), height: round2(h) });
        var title = svgNode("title", {});
        title.textContent = when + " " + name + ": " + n;
        rect.appendChild(title);
        svg.appendChild(rect);
      });
    }
    d.ticks.forEach(function (t) {
      var text = svgNode("text", { "class": "tick", x: t.x, y: height - 6 });
      text.textContent = t.label;
      svg.appendChild(text);
    });
    chart.fig.querySelector(".total").textContent = String(total);
    chart.fig.querySelector(".top").textContent = String(top);
    var legend = chart.fig.querySelector("ul.legend");
    legend.replaceChildren();
    order.forEach(function (name) {
      var li = node("li");
      li.append(link("svc s" + d.colours[name], "/?category=" + encodeURIComponent(name), name),
                " " + totals[name]);
      legend.append(li);
    });
  }
  var every = Math.max(1000, parseInt(board && board.getAttribute("data-refresh"), 10) || 60000);
  var reading = false, lastRead = Date.now();
  function reread() {
    if (!board || reading) { return; }
    reading = true;
    lastRead = Date.now();
    fetch(board.getAttribute("data-activity"), { cache: "no-store" })
      .then(function (answer) { return answer.ok ? answer.json() : null; })
      .then(function (body) {
        if (!body) { return; }
        counted = position(body.position);
        body.charts.forEach(function (d, i) {
          if (charts[i]) { charts[i].data = d; draw(charts[i]); }
        });
      })
      .catch(function () { /* the next re-read tries again */ })
      .finally(function () { reading = false; });
  }
  if (charts.length) {
    setInterval(function () { if (!document.hidden) { reread(); } }, every);
  }
  function count(m, token) {
    if (counted && !later(position(token), counted)) { return; }
    var at = Date.parse(String(m.iso).replace(/(\.\d{3})\d+/, "$1")) / 1000;
    var past = false;
    charts.forEach(function (chart) {
      var d = chart.data, slot = Math.floor((at - d.start) / d.bucket);
      if (slot >= d.slots) { past = true; return; }
      if (!(slot >= 0)) { return; }
      if (!d.series[m.service]) {
        d.series[m.service] = new Array(d.slots).fill(0);
        d.colours[m.service] = m.colour;
      }
      d.series[m.service][slot] += 1;
      draw(chart);
    });
    // a new hour began: the charts move on at the next re-read, at most one per 5 s
    if (past && Date.now() - lastRead >= 5000) { reread(); }
  }

  var source = new EventSource(list.getAttribute("data-stream"));
  source.onopen = function () { say("live"); };
  source.onerror = function () {
    say(source.readyState === EventSource.CLOSED ? "not live (reload to retry)" : "reconnecting…", "off");
  };
  source.addEventListener("gap", function () { say("live · some messages were missed: reload", "off"); });
  source.onmessage = function (event) {
    var m = JSON.parse(event.data);
    var id = String(m.id);
    if (seen.has(id)) { return; }
    seen.add(id);
    count(m, event.lastEventId || id);
    var empty = document.getElementById("empty");
    if (empty) { empty.remove(); }
    list.insertBefore(line(m), list.firstChild);
    while (list.children.length > keep) {
      seen.delete(list.lastElementChild.getAttribute("data-id"));
      list.lastElementChild.remove();
    }
  };
})();
