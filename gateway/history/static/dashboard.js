// busgate dashboard: adds new messages from the live stream (Server-Sent Events) to the
// list, newest first, each id once; builds every node with textContent (no HTML parsing
// of what messages say).
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
    var empty = document.getElementById("empty");
    if (empty) { empty.remove(); }
    list.insertBefore(line(m), list.firstChild);
    while (list.children.length > keep) {
      seen.delete(list.lastElementChild.getAttribute("data-id"));
      list.lastElementChild.remove();
    }
  };
})();
