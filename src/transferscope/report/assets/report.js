/* transferscope report, part 1: helpers, tables from embedded JSON (sort, filter, pages,
   CSV), bar charts and heat maps. Joined with drill.js inside one function scope by
   report/page.py script(); data reaches the DOM through textContent only, nothing is fetched. */
  var NS = "http://www.w3.org/2000/svg";
  var COLLATOR = new Intl.Collator(undefined, {numeric: true, sensitivity: "base"});
  var MODEL_COLS = ["model", "model A", "model B"];
  var TARGET_COLOURS = ["#9ecae1", "#fdae6b", "#a1d99b", "#bcbddc", "#fdd0a2", "#c7e9c0",
                        "#dadaeb", "#fee6ce", "#c6dbef", "#d9d9d9"];

  function el(tag, props) {
    var e = document.createElement(tag);
    for (var k in props || {}) {
      var v = props[k];
      if (v === null || v === undefined) continue;
      if (k === "text") e.textContent = v;
      else if (k === "class") e.className = v;
      else if (k.slice(0, 2) === "on") e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (var i = 2; i < arguments.length; i++) {
      if (arguments[i] !== null && arguments[i] !== undefined) e.append(arguments[i]);
    }
    return e;
  }
  function svg(tag, attrs, text) {
    var e = document.createElementNS(NS, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function readJSON(id) { return JSON.parse(document.getElementById(id).textContent); }
  var META = readJSON("ts-meta");
  var IMAGES = null;
  function imageSrc(analysis, key) {
    if (!IMAGES) IMAGES = readJSON("ts-images");
    var b = IMAGES[analysis + ":" + key];
    return b ? "data:image/jpeg;base64," + b : null;
  }
  function fmt(v, kind) {
    if (v === null || v === undefined) return "";
    if (kind === "bool") return v ? "yes" : "no";
    if (typeof v === "number") {
      if (!isFinite(v)) return "";
      if (kind === "int") return String(v);
      return Math.abs(v) < 10 ? v.toFixed(3) : v.toFixed(1);
    }
    return String(v);
  }
  function pct(v) { return v === null || v === undefined ? "n/a" : (100 * v).toFixed(0) + "%"; }
  function modelKey(n) {
    n = String(n);
    var suffix = " + source head (M^st)";
    if (n.slice(-suffix.length) === suffix) return n.slice(0, -suffix.length);
    return /\(M\^s\)$/.test(n) ? "source" : n;
  }
  function shortModel(n) {
    var k = modelKey(n);
    return k === "source" ? "source (M^s)" : k === String(n) ? k : k + " (M^st)";
  }
  function colour(n) { return META.colours[modelKey(n)] || null; }
  function swatch(c) { return el("span", {class: "sw", style: "background:" + (c || "#bbb")}); }

  /* ---------------------------------------------------------------- tables */
  var TABLES = [];
  function Table(host, d) {
    var self = this;
    this.host = host; this.d = d; this.sort = null; this.dir = 1; this.q = ""; this.sel = {};
    this.page = 0; this.size = 25;
    this.num = d.kinds.map(function (k) { return k !== "str"; });
    this.text = d.rows.map(function (r) {
      return r.map(function (v, i) { return fmt(v, d.kinds[i]); }).join("\u0001").toLowerCase();
    });
    this.modelCols = d.columns.map(function (c, i) { return MODEL_COLS.indexOf(c) >= 0 ? i : -1; })
      .filter(function (i) { return i >= 0; });
    var ctl = el("div", {class: "ctl"});
    this.search = el("input", {type: "search", placeholder: "filter: class name, wnid, any text",
                               "aria-label": "filter " + d.key});
    this.search.addEventListener("input", function () {
      self.q = self.search.value.trim().toLowerCase(); self.page = 0; self.update();
    });
    ctl.append(this.search);
    d.columns.forEach(function (c, i) {
      if (d.kinds[i] !== "str" || i === d.classCol) return;
      var seen = {}, vals = [];
      d.rows.forEach(function (r) { if (r[i] !== null && !seen[r[i]]) { seen[r[i]] = 1; vals.push(r[i]); } });
      if (vals.length < 2 || vals.length > 12 || vals.length === d.rows.length) return;
      var s = el("select", {"aria-label": c}, el("option", {value: "", text: c + ": all"}));
      vals.forEach(function (v) { s.append(el("option", {value: v, text: v})); });
      s.addEventListener("change", function () {
        if (s.value === "") delete self.sel[i]; else self.sel[i] = s.value;
        self.page = 0; self.update();
      });
      ctl.append(s);
    });
    this.count = el("span", {class: "count"});
    this.prev = el("button", {type: "button", text: "\u2039 prev"});
    this.prev.addEventListener("click", function () { self.page--; self.render(); });
    this.next = el("button", {type: "button", text: "next \u203a"});
    this.next.addEventListener("click", function () { self.page++; self.render(); });
    this.pageLab = el("span", {class: "count"});
    var size = el("select", {"aria-label": "rows per page"});
    [25, 100, 500, 5000].forEach(function (n) { size.append(el("option", {value: n, text: n + " / page"})); });
    size.addEventListener("change", function () { self.size = +size.value; self.page = 0; self.render(); });
    var csv = el("button", {type: "button", class: "csv", text: "CSV \u2193",
                            title: "download the filtered rows in the order shown"});
    csv.addEventListener("click", function () { self.download(); });
    ctl.append(this.count, this.prev, this.pageLab, this.next, size, csv);
    var head = el("tr");
    this.ths = d.columns.map(function (c, i) {
      var th = el("th", {class: self.num[i] ? null : "s", scope: "col", tabindex: "0",
                         "aria-sort": "none", title: "sort by " + c, text: c});
      th.addEventListener("click", function () { self.sortBy(i); });
      th.addEventListener("keydown", function (e) { if (e.key === "Enter") self.sortBy(i); });
      head.append(th);
      return th;
    });
    this.tbody = el("tbody");
    function open(e) {
      var tr = e.target.closest("tr.clickable");
      if (tr && (e.type === "click" || e.key === "Enter")) openClass(+tr.dataset.cls);
    }
    this.tbody.addEventListener("click", open);
    this.tbody.addEventListener("keydown", open);
    host.append(ctl, el("div", {class: "wrap"}, el("table", null, el("thead", null, head), this.tbody)));
    this.update();
  }
  Table.prototype.sortBy = function (i) {
    if (this.sort === i) this.dir = -this.dir; else { this.sort = i; this.dir = 1; }
    var dir = this.dir;
    this.ths.forEach(function (th, j) {
      th.setAttribute("aria-sort", j === i ? (dir > 0 ? "ascending" : "descending") : "none");
    });
    this.update();
  };
  Table.prototype.update = function () {
    var rows = this.d.rows, terms = this.q ? this.q.split(/\s+/) : [], sel = this.sel, text = this.text;
    var keys = Object.keys(sel), idx = [];
    for (var r = 0; r < rows.length; r++) {
      var ok = keys.every(function (i) { return String(rows[r][i]) === sel[i]; }) &&
        terms.every(function (w) { return text[r].indexOf(w) >= 0; });
      if (ok) idx.push(r);
    }
    if (this.sort !== null) {
      var i = this.sort, dir = this.dir, num = this.num[i];
      idx.sort(function (a, b) {
        var x = rows[a][i], y = rows[b][i];
        if (x === null || y === null) return x === null ? (y === null ? a - b : 1) : -1;
        var c = num ? x - y : COLLATOR.compare(String(x), String(y));
        return c ? dir * c : a - b;
      });
    }
    this.view = idx;
    this.render();
  };
  Table.prototype.render = function () {
    var self = this, d = this.d, n = this.view.length, pages = Math.max(1, Math.ceil(n / this.size));
    this.page = Math.min(Math.max(this.page, 0), pages - 1);
    var start = this.page * this.size, frag = document.createDocumentFragment();
    this.view.slice(start, start + this.size).forEach(function (r) {
      var row = d.rows[r], tr = el("tr");
      row.forEach(function (v, i) {
        var td = el("td", {class: self.num[i] ? null : "s"});
        if (self.modelCols.indexOf(i) >= 0 && v !== null) td.append(swatch(colour(v)));
        td.append(fmt(v, d.kinds[i]));
        tr.append(td);
      });
      if (d.classCol >= 0 && row[d.classCol] !== null) {
        tr.className = "clickable"; tr.tabIndex = 0; tr.title = "open this source class";
        tr.dataset.cls = row[d.classCol];
      }
      frag.append(tr);
    });
    this.tbody.replaceChildren(frag);
    this.count.textContent = n === d.rows.length ? n + " rows" : n + " of " + d.rows.length + " rows";
    this.pageLab.textContent = "page " + (this.page + 1) + " / " + pages;
    this.prev.disabled = this.page === 0;
    this.next.disabled = this.page >= pages - 1;
  };
  function csvCell(v) {
    if (v === null || v === undefined) return "";
    var s = String(v);
    return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }
  Table.prototype.download = function () {
    var d = this.d, lines = [d.columns.map(csvCell).join(",")];
    this.view.forEach(function (r) { lines.push(d.rows[r].map(csvCell).join(",")); });
    var url = URL.createObjectURL(new Blob([lines.join("\r\n") + "\r\n"], {type: "text/csv;charset=utf-8"}));
    var a = el("a", {href: url, download: d.file});
    document.body.append(a); a.click(); a.remove();
    setTimeout(function () { URL.revokeObjectURL(url); }, 60000);
  };

  /* ---------------------------------------------------------------- charts */
  function chart(d, host) {
    var c = d.chart, cols = d.columns, ti = cols.indexOf(c.total), mi = cols.indexOf("model");
    var labels = ["model", "source images"].map(function (x) { return cols.indexOf(x); })
      .filter(function (i) { return i >= 0; });
    var ci = c.categories.map(function (x) { return cols.indexOf(x); });
    var seen = {}, grey = 0;
    var series = d.rows.filter(function (r) { return r[ti]; }).map(function (r) {
      var model = mi >= 0 ? r[mi] : "", col = colour(model), op = 1;
      if (!col) { col = ["#9a9a9a", "#c4c4c4", "#777", "#dadada"][grey++ % 4]; }
      else if (seen[modelKey(model)]) op = 0.5;
      seen[modelKey(model)] = 1;
      return {name: labels.map(function (i) { return r[i]; }).join(" \u00b7 "), colour: col, op: op,
              vals: ci.map(function (i) { return 100 * (r[i] || 0) / r[ti]; })};
    });
    if (!series.length) return;
    var W = 720, H = 270, L = 48, R = 10, T = 12, B = 64, pw = W - L - R, ph = H - T - B;
    var max = 0;
    series.forEach(function (s) { s.vals.forEach(function (v) { max = Math.max(max, v); }); });
    var ymax = Math.max(10, Math.ceil(max / 10) * 10);
    var g = svg("svg", {class: "chart", viewBox: "0 0 " + W + " " + H, role: "img",
                        "aria-label": c.y + " by " + c.x});
    for (var k = 0; k <= 5; k++) {
      var y = T + ph - ph * k / 5;
      g.append(svg("line", {x1: L, x2: W - R, y1: y, y2: y, stroke: "#e4e8f0"}));
      g.append(svg("text", {x: L - 5, y: y + 4, "text-anchor": "end"}, (ymax * k / 5).toFixed(0)));
    }
    var gw = pw / ci.length, bw = gw * 0.82 / series.length;
    c.categories.forEach(function (cat, j) {
      var x0 = L + gw * j + gw * 0.09;
      series.forEach(function (s, n) {
        var h = ph * s.vals[j] / ymax;
        var rect = svg("rect", {x: x0 + n * bw, y: T + ph - h, width: Math.max(bw - 1, 1), height: h,
                                fill: s.colour, "fill-opacity": s.op});
        rect.append(svg("title", {}, s.name + " | " + cat + ": " + s.vals[j].toFixed(1) + "%"));
        g.append(rect);
      });
      g.append(svg("text", {x: L + gw * (j + 0.5), y: T + ph + 15, "text-anchor": "middle"}, cat));
    });
    g.append(svg("text", {x: L + pw / 2, y: H - 22, "text-anchor": "middle"}, c.x));
    g.append(svg("text", {x: 12, y: T + ph / 2, "text-anchor": "middle",
                          transform: "rotate(-90 12 " + (T + ph / 2) + ")"}, c.y));
    var legend = el("div", {class: "legend"});
    series.forEach(function (s) {
      var sw = swatch(s.colour); sw.style.opacity = s.op;
      legend.append(el("span", null, sw, s.name));
    });
    host.append(el("div", {class: "figure"}, g, legend));
  }

  function diverging(v) {  // -1 blue, 0 white, +1 red
    if (v === null || v === undefined) return "#eeeeee";
    var t = Math.min(1, Math.abs(v)), to = v < 0 ? [44, 127, 184] : [192, 57, 43];
    return "rgb(" + to.map(function (x) { return Math.round(255 + (x - 255) * t); }).join(",") + ")";
  }
  function heatmap(d, host) {
    var c = d.chart, cols = d.columns, ri = cols.indexOf(c.rows), ci = cols.indexOf(c.cols);
    var vi = cols.indexOf(c.value), facets = {}, order = [];
    var fi = c.facets.map(function (f) { return cols.indexOf(f); }).filter(function (i) { return i >= 0; });
    d.rows.forEach(function (r) {
      var k = fi.map(function (i) { return r[i]; }).join(" \u00b7 ");
      if (!facets[k]) { facets[k] = []; order.push(k); }
      facets[k].push(r);
    });
    var wrap = el("div", {class: "heatmaps"});
    order.forEach(function (k) {
      var rows = facets[k], models = [], val = {};
      rows.forEach(function (r) {
        [r[ri], r[ci]].forEach(function (m) { if (models.indexOf(m) < 0) models.push(m); });
        val[r[ri] + "\u0001" + r[ci]] = val[r[ci] + "\u0001" + r[ri]] = r[vi];
      });
      var n = models.length, cell = 38, L = 170, T = 22, W = L + n * cell + 8, H = T + n * cell + 8;
      var g = svg("svg", {class: "chart", width: W, height: H, viewBox: "0 0 " + W + " " + H,
                          role: "img", "aria-label": c.value + ", " + k});
      g.append(svg("text", {x: 0, y: 14, "font-weight": "bold"}, k));
      models.forEach(function (a, i) {
        g.append(svg("text", {x: L - 6, y: T + i * cell + cell / 2 + 4, "text-anchor": "end"},
                     String(a).length > 26 ? String(a).slice(0, 25) + "\u2026" : a));
        models.forEach(function (b, j) {
          var v = i === j ? null : val[a + "\u0001" + b];
          var rect = svg("rect", {x: L + j * cell, y: T + i * cell, width: cell - 2, height: cell - 2,
                                  fill: i === j ? "#f7f7f7" : diverging(v)});
          rect.append(svg("title", {}, a + " vs " + b + ": " + (v === null || v === undefined ? "n/a" : v.toFixed(3))));
          g.append(rect);
          if (i !== j && v !== null && v !== undefined) {
            g.append(svg("text", {x: L + j * cell + cell / 2 - 1, y: T + i * cell + cell / 2 + 3,
                                  "text-anchor": "middle", "font-size": 10}, v.toFixed(2)));
          }
        });
      });
      wrap.append(g);
    });
    wrap.append(el("div", {class: "legend", text: c.unit + ": \u22121 blue, 0 white, +1 red; " +
      "columns in the same order as the rows (read the labels on the left)"}));
    host.append(wrap);
  }
