// Les graphiques d'un test (uPlot, servi par le moniteur lui-même : pas d'internet au labo).
// Une courbe par graphique, chacune sur l'axe du temps du rapport (arrêts retirés), graduée comme lui.
"use strict";
(function () {
  const box = document.getElementById("charts");
  if (!box || typeof uPlot === "undefined") return;

  // The report's ticks, thinned to what the width holds (a phone has room for three or four labels).
  function ticksFor(data, width) {
    const room = Math.max(2, Math.floor((width - 60) / 90));
    const every = Math.max(1, Math.ceil(data.ticks.length / room));
    const kept = data.ticks.filter(function (_t, i) { return i % every === 0; });
    return {
      splits: function () { return kept.map(function (t) { return t.x; }); },
      values: function () { return kept.map(function (t) { return t.label; }); },
    };
  }

  function draw(data) {
    const width = Math.max(240, box.clientWidth - 12);
    const ticks = ticksFor(data, width);
    for (const s of data.series) {
      const holder = document.createElement("div");
      holder.className = "chart";
      holder.dataset.series = s.name;
      box.append(holder);
      const opts = {
        title: s.label, width: width, height: 170, legend: { show: false }, cursor: { drag: { x: false } },
        scales: { x: { time: false } },
        axes: [{ splits: ticks.splits, values: ticks.values, size: 40 }, { size: 50 }],
        series: [{}, { label: s.label, stroke: s.color, width: 1.5, spanGaps: false }],
      };
      new uPlot(opts, [s.x, s.y], holder);
    }
    box.dataset.ready = "1";
  }

  fetch(box.dataset.src, { credentials: "same-origin" })
    .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
    .then(draw)
    .catch(function (e) { box.textContent = "Graphiques indisponibles (" + e.message + ")"; });
})();
