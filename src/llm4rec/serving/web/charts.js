/* llm4rec web: small hand-written SVG charts (no library).
 *
 *   Charts.line(el, {title, xLabel, yLabel, x: "time"|"number", yMin, yMax, yFormat,
 *                    series: [{name, points: [{x, y, lo, hi}]}]})
 *     lines with a shaded confidence band where points carry lo/hi; several series share the axes.
 *   Charts.bars(el, {title, yLabel, yMin, yFormat, groups: [label], series: [{name, values: [{y, lo, hi}]}]})
 *     grouped bars with error bars (lo..hi) per group and series.
 *
 * Both replace el's content with a <figure>: the SVG (sized to el's width, so text keeps its size at any width),
 * a legend as an HTML list, and a caption. Every label goes in with textContent / setAttribute, never as markup.
 */
"use strict";

const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  // Okabe-Ito, readable by people with colour-vision deficiencies
  const COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999999"];
  const MARGIN = {top: 12, right: 14, bottom: 44, left: 58};

  function svgEl(name, attrs, parent) {
    const e = document.createElementNS(NS, name);
    Object.keys(attrs || {}).forEach((k) => e.setAttribute(k, String(attrs[k])));
    if (parent) parent.appendChild(e);
    return e;
  }

  function htmlEl(name, attrs, parent, text) {
    const e = document.createElement(name);
    Object.keys(attrs || {}).forEach((k) => e.setAttribute(k, String(attrs[k])));
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (parent) parent.appendChild(e);
    return e;
  }

  const color = (i) => COLORS[i % COLORS.length];
  /** Series past the palette's length repeat its colours with a dashed line. */
  const dash = (i) => (i >= COLORS.length ? "6 3" : null);
  const finite = (v) => typeof v === "number" && isFinite(v);

  /** About `count` round ticks (1, 2, 5 x 10^k) covering [lo, hi]. */
  function niceTicks(lo, hi, count) {
    if (!(hi > lo)) {
      const d = Math.abs(lo) > 0 ? Math.abs(lo) * 0.5 : 1;
      lo -= d; hi += d;
    }
    const raw = (hi - lo) / Math.max(1, count);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const norm = raw / mag;
    const step = (norm >= 5 ? 10 : norm >= 2 ? 5 : norm >= 1 ? 2 : 1) * mag;
    const start = Math.floor(lo / step) * step;
    const end = Math.ceil(hi / step) * step;
    const ticks = [];
    for (let v = start; v <= end + step * 1e-9; v += step) ticks.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    return {ticks: ticks, lo: start, hi: end, step: step};
  }

  /** Round time ticks (seconds): 10 s .. 1 day steps. */
  function timeTicks(lo, hi, count) {
    const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
    const raw = (hi - lo) / Math.max(1, count);
    const step = steps.find((s) => s >= raw) || Math.ceil(raw / 86400) * 86400;
    const ticks = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) ticks.push(v);
    return {ticks: ticks, lo: lo, hi: hi, step: step};
  }

  function formatNumber(v) {
    if (!finite(v)) return "\u2013";
    const a = Math.abs(v);
    if (a === 0) return "0";
    if (a >= 1e6) return (v / 1e6).toFixed(a >= 1e7 ? 0 : 1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(a >= 1e5 ? 0 : 1) + "k";
    if (a >= 100) return v.toFixed(0);
    if (a >= 1) return String(Math.round(v * 100) / 100);
    if (a >= 0.001) return String(Math.round(v * 10000) / 10000);
    return v.toExponential(1);
  }

  function formatTime(t, step) {
    const d = new Date(t * 1000);
    const hh = String(d.getHours()).padStart(2, "0");
    const mm = String(d.getMinutes()).padStart(2, "0");
    if (step && step < 60) return hh + ":" + mm + ":" + String(d.getSeconds()).padStart(2, "0");
    if (step && step >= 86400) return d.toISOString().slice(0, 10);
    return hh + ":" + mm;
  }

  /** The frame every chart shares: figure, svg sized to the container, caption. */
  function frame(el, opts, height) {
    el.textContent = "";
    const fig = htmlEl("figure", {class: "chart"}, el);
    if (opts.title) htmlEl("figcaption", {class: "chart-title"}, fig, opts.title);
    const cs = window.getComputedStyle(el);
    const inner = el.clientWidth - (parseFloat(cs.paddingLeft) || 0) - (parseFloat(cs.paddingRight) || 0);
    const width = Math.max(280, Math.min(1600, Math.floor(inner > 0 ? inner : 640)));
    const svg = svgEl("svg", {viewBox: "0 0 " + width + " " + height, width: width, height: height,
                              role: "img", class: "chart-svg", preserveAspectRatio: "xMinYMin meet"}, fig);
    const title = svgEl("title", {}, svg);
    title.textContent = opts.title || "";
    return {fig: fig, svg: svg, width: width, height: height};
  }

  function legend(fig, names) {
    if (names.length < 2) return;
    const ul = htmlEl("ul", {class: "legend"}, fig);
    names.forEach((name, i) => {
      const li = htmlEl("li", {}, ul);
      htmlEl("span", {class: "swatch" + (dash(i) ? " dashed" : ""), style: "background-color:" + color(i),
                      "aria-hidden": "true"}, li);
      htmlEl("span", {}, li, name);
    });
  }

  function empty(el, opts, message) {
    el.textContent = "";
    const fig = htmlEl("figure", {class: "chart chart-empty"}, el);
    if (opts.title) htmlEl("figcaption", {class: "chart-title"}, fig, opts.title);
    htmlEl("p", {class: "muted"}, fig, message || "No data yet.");
  }

  function axes(svg, plot, xs, ys, opts) {
    const g = svgEl("g", {class: "axes"}, svg);
    ys.ticks.forEach((v) => {
      const y = plot.y(v);
      svgEl("line", {x1: plot.left, x2: plot.right, y1: y, y2: y, class: "grid"}, g);
      const t = svgEl("text", {x: plot.left - 6, y: y + 4, "text-anchor": "end", class: "tick"}, g);
      t.textContent = (opts.yFormat || formatNumber)(v);
    });
    if (xs) {
      xs.ticks.forEach((v) => {
        const x = plot.x(v);
        svgEl("line", {x1: x, x2: x, y1: plot.bottom, y2: plot.bottom + 4, class: "axis"}, g);
        const anchor = x > plot.right - 24 ? "end" : x < plot.left + 24 ? "start" : "middle";
        const t = svgEl("text", {x: x, y: plot.bottom + 17, "text-anchor": anchor, class: "tick"}, g);
        t.textContent = opts.x === "time" ? formatTime(v, xs.step) : (opts.xFormat || formatNumber)(v);
      });
    }
    svgEl("line", {x1: plot.left, x2: plot.right, y1: plot.bottom, y2: plot.bottom, class: "axis"}, g);
    svgEl("line", {x1: plot.left, x2: plot.left, y1: plot.top, y2: plot.bottom, class: "axis"}, g);
    if (opts.xLabel) {
      const t = svgEl("text", {x: (plot.left + plot.right) / 2, y: plot.bottom + 36, "text-anchor": "middle",
                               class: "label"}, g);
      t.textContent = opts.xLabel;
    }
    if (opts.yLabel) {
      const cy = (plot.top + plot.bottom) / 2;
      const t = svgEl("text", {x: 14, y: cy, "text-anchor": "middle", class: "label",
                               transform: "rotate(-90 14 " + cy + ")"}, g);
      t.textContent = opts.yLabel;
    }
  }

  function line(el, opts) {
    const series = (opts.series || []).map((s) => ({
      name: s.name, points: (s.points || []).filter((p) => finite(p.x)).sort((a, b) => a.x - b.x)}));
    const all = [];
    series.forEach((s) => s.points.forEach((p) => all.push(p)));
    const valued = all.filter((p) => finite(p.y));
    if (!valued.length) return empty(el, opts, opts.emptyText);
    const f = frame(el, opts, opts.height || 240);
    let xlo = Math.min.apply(null, all.map((p) => p.x));
    let xhi = Math.max.apply(null, all.map((p) => p.x));
    if (finite(opts.xMin)) xlo = Math.min(xlo, opts.xMin);
    if (finite(opts.xMax)) xhi = Math.max(xhi, opts.xMax);
    if (xhi === xlo) {
      const pad = finite(opts.xPad) ? opts.xPad : 1;
      xlo -= pad; xhi += pad;
    }
    const yvals = [];
    valued.forEach((p) => {
      yvals.push(p.y);
      if (finite(p.lo)) yvals.push(p.lo);
      if (finite(p.hi)) yvals.push(p.hi);
    });
    let ylo = Math.min.apply(null, yvals);
    let yhi = Math.max.apply(null, yvals);
    if (finite(opts.yMin)) ylo = Math.min(ylo, opts.yMin);
    if (finite(opts.yMax)) yhi = Math.max(yhi, opts.yMax);
    const ys = niceTicks(ylo, yhi, 4);
    const plot = {left: MARGIN.left, right: f.width - MARGIN.right, top: MARGIN.top, bottom: f.height - MARGIN.bottom};
    const tickCount = Math.max(2, Math.floor((plot.right - plot.left) / 90));
    const xs = opts.x === "time" ? timeTicks(xlo, xhi, tickCount) : niceTicks(xlo, xhi, tickCount);
    if (opts.x !== "time") { xlo = Math.min(xlo, xs.lo); xhi = Math.max(xhi, xs.hi); }
    if (opts.integerX) xs.ticks = xs.ticks.filter((v) => Number.isInteger(v));
    xs.ticks = xs.ticks.filter((v) => v >= xlo && v <= xhi);
    plot.x = (v) => plot.left + (v - xlo) / (xhi - xlo) * (plot.right - plot.left);
    plot.y = (v) => plot.bottom - (v - ys.lo) / (ys.hi - ys.lo) * (plot.bottom - plot.top);
    axes(f.svg, plot, xs, ys, opts);
    const round = (v) => Math.round(v * 10) / 10;
    series.forEach((s, i) => {
      const g = svgEl("g", {class: "series", "data-series": s.name}, f.svg);
      // band: one polygon per run of consecutive points with both bounds
      let run = [];
      const flush = () => {
        if (run.length) {
          const top = run.map((p) => round(plot.x(p.x)) + "," + round(plot.y(p.hi)));
          const bottom = run.slice().reverse().map((p) => round(plot.x(p.x)) + "," + round(plot.y(p.lo)));
          if (run.length === 1) {
            const x = round(plot.x(run[0].x));
            svgEl("line", {x1: x, x2: x, y1: plot.y(run[0].lo), y2: plot.y(run[0].hi), stroke: color(i),
                           class: "whisker"}, g);
          } else {
            svgEl("polygon", {points: top.concat(bottom).join(" "), fill: color(i), class: "band"}, g);
          }
        }
        run = [];
      };
      s.points.forEach((p) => {
        if (finite(p.y) && finite(p.lo) && finite(p.hi)) run.push(p);
        else flush();
      });
      flush();
      // line: one path, broken where y is missing
      let d = "";
      let pen = false;
      s.points.forEach((p) => {
        if (!finite(p.y)) { pen = false; return; }
        d += (pen ? "L" : "M") + round(plot.x(p.x)) + "," + round(plot.y(p.y));
        pen = true;
      });
      if (d) {
        const path = svgEl("path", {d: d, stroke: color(i), class: "line"}, g);
        if (dash(i)) path.setAttribute("stroke-dasharray", dash(i));
      }
      const few = s.points.filter((p) => finite(p.y)).length <= 40;
      if (few) {
        s.points.forEach((p) => {
          if (!finite(p.y)) return;
          const c = svgEl("circle", {cx: round(plot.x(p.x)), cy: round(plot.y(p.y)), r: 2.5, fill: color(i),
                                     class: "dot"}, g);
          const tip = svgEl("title", {}, c);
          const xText = opts.x === "time" ? formatTime(p.x, 1) : formatNumber(p.x);
          let text = s.name + " \u00b7 " + xText + ": " + (opts.yFormat || formatNumber)(p.y);
          if (finite(p.lo) && finite(p.hi)) text += " [" + formatNumber(p.lo) + ", " + formatNumber(p.hi) + "]";
          tip.textContent = text;
        });
      }
    });
    legend(f.fig, series.map((s) => s.name));
    return f.fig;
  }

  function bars(el, opts) {
    const groups = opts.groups || [];
    const series = opts.series || [];
    const vals = [];
    series.forEach((s) => (s.values || []).forEach((v) => {
      if (v && finite(v.y)) vals.push(v.y);
      if (v && finite(v.lo)) vals.push(v.lo);
      if (v && finite(v.hi)) vals.push(v.hi);
    }));
    if (!groups.length || !vals.length) return empty(el, opts, opts.emptyText);
    const f = frame(el, opts, opts.height || 240);
    const ylo = Math.min(finite(opts.yMin) ? opts.yMin : 0, Math.min.apply(null, vals));
    const ys = niceTicks(ylo, Math.max.apply(null, vals), 4);
    const plot = {left: MARGIN.left, right: f.width - MARGIN.right, top: MARGIN.top, bottom: f.height - MARGIN.bottom};
    plot.y = (v) => plot.bottom - (v - ys.lo) / (ys.hi - ys.lo) * (plot.bottom - plot.top);
    axes(f.svg, plot, null, ys, opts);
    const slot = (plot.right - plot.left) / groups.length;
    const barW = Math.max(4, Math.min(48, slot * 0.8 / Math.max(1, series.length)));
    const zero = plot.y(Math.max(ys.lo, 0));
    groups.forEach((name, gi) => {
      const cx = plot.left + slot * (gi + 0.5);
      const label = svgEl("text", {x: cx, y: plot.bottom + 17, "text-anchor": "middle", class: "tick"}, f.svg);
      const maxChars = Math.max(4, Math.floor(slot / 7));
      label.textContent = name.length > maxChars ? name.slice(0, maxChars - 1) + "\u2026" : name;
      series.forEach((s, si) => {
        const v = (s.values || [])[gi];
        if (!v || !finite(v.y)) return;
        const x = cx - barW * series.length / 2 + barW * si;
        const y = plot.y(v.y);
        const g = svgEl("g", {class: "bar", "data-group": name, "data-series": s.name}, f.svg);
        const r = svgEl("rect", {x: x + 1, y: Math.min(y, zero), width: barW - 2, height: Math.max(1, Math.abs(zero - y)),
                                 fill: color(si)}, g);
        const tip = svgEl("title", {}, r);
        let text = (series.length > 1 ? s.name + " \u00b7 " : "") + name + ": " + (opts.yFormat || formatNumber)(v.y);
        if (finite(v.lo) && finite(v.hi)) {
          text += " (95% interval " + formatNumber(v.lo) + " to " + formatNumber(v.hi) + ")";
          const mx = x + barW / 2;
          const w = Math.min(8, barW / 3);
          svgEl("path", {d: "M" + (mx - w) + "," + plot.y(v.hi) + "H" + (mx + w) + "M" + mx + "," + plot.y(v.hi) +
                            "V" + plot.y(v.lo) + "M" + (mx - w) + "," + plot.y(v.lo) + "H" + (mx + w),
                         class: "errorbar"}, g);
        }
        tip.textContent = text;
      });
    });
    legend(f.fig, series.map((s) => s.name));
    return f.fig;
  }

  return {line, bars, formatNumber, formatTime, color, niceTicks};
})();
