// Le tableau des bancs : chaque message « bench » du flux (/evenements) redessine la carte de son banc,
// avec les textes et couleurs calculés par le serveur (les mêmes que le kiosque). Aucun envoi vers un banc.
"use strict";
(function () {
  const grid = document.getElementById("benches");
  const live = document.getElementById("live");
  if (!grid) return;

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function pill(kind, label, state) {
    const node = el("span", "pill " + state, label);
    node.dataset.link = kind;
    return node;
  }

  function card(view) {
    const section = el("section", "bench " + view.kind);
    section.id = "b-" + view.key;
    section.dataset.key = view.key;
    section.dataset.seq = view.seq === null ? "" : String(view.seq);
    const h2 = el("h2");
    h2.append(el("span", "t", view.title), pill("esp", "ESP", view.esp), pill("recording", "Enregistrement", view.recording));
    const phase = el("p", "phase", view.phase);
    phase.style.color = view.phase_color;
    const left = el("span", "left", view.time_left);
    left.title = "Temps restant";
    phase.append(" ", left);
    const measures = el("div", "measures");
    for (const m of view.measures) {
      const row = el("div", "m");
      const value = el("span", "v", m.text);
      value.dataset.m = m.key;
      value.style.color = m.color;
      row.append(el("span", "n", m.name), value);
      measures.append(row);
    }
    const alarms = el("ul", "alarms");
    for (const a of view.alarms) alarms.append(el("li", "", a.text));
    section.append(h2, el("p", "status", view.status), phase, el("p", "age", view.age), measures, alarms);
    return section;
  }

  function place(view) {
    const node = card(view);
    const old = document.getElementById(node.id);
    if (old) { old.replaceWith(node); return; }
    const empty = grid.querySelector(".empty");
    if (empty) empty.remove();
    grid.append(node);
  }

  function connect() {
    const source = new EventSource("/evenements");
    source.addEventListener("open", function () { live.textContent = "en direct"; live.className = "live on"; });
    source.addEventListener("error", function () { live.textContent = "reconnexion…"; live.className = "live off"; });
    source.addEventListener("bench", function (event) { place(JSON.parse(event.data)); });
  }
  connect();
})();
