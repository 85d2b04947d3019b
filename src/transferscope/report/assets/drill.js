/* transferscope report, part 2: the per-class drill-down panel and the page set-up. */
  /* ---------------------------------------------------------------- drill-down */
  var drill = document.getElementById("drill");
  function table(analysis, key) {
    return TABLES.filter(function (t) { return t.d.analysis === analysis && t.d.key === key; })[0];
  }
  function asObjects(cols, rows) {
    return rows.map(function (r) {
      var o = {}; cols.forEach(function (c, i) { o[c] = r[i]; }); return o;
    });
  }
  function rowsOf(t, c) {
    return t ? t.d.rows.filter(function (r) { return r[t.d.classCol] === c; }) : [];
  }
  function galleryRows(name, col, c) {
    var g = META.galleries[name];
    if (!g) return [];
    var i = g.columns.indexOf(col);
    return asObjects(g.columns, g.rows.filter(function (r) { return r[i] === c; }));
  }
  function classInfo(c) {
    var info = {name: "source class " + c, wnid: ""};
    TABLES.some(function (t) {
      if (t.d.classCol < 0 || t.d.nameCol < 0) return false;
      var r = rowsOf(t, c)[0];
      if (r) { info.name = String(r[t.d.nameCol]); info.wnid = r[t.d.wnidCol] || ""; }
      return !!r;
    });
    return info;
  }
  function bar(label, col, segments, text) {
    var track = el("span", {class: "track"});
    segments.forEach(function (s) {
      var f = el("span", {class: "fill", title: s.title || null,
                          style: "width:" + (100 * (s.v || 0)).toFixed(1) + "%;background:" + s.colour});
      track.append(f);
    });
    return el("div", {class: "bar"}, el("span", {class: "lab", title: label}, swatch(col), label),
              track, el("span", {class: "val", text: text}));
  }
  function bySet(rows, fn, box) {
    var sets = {};
    rows.forEach(function (r) { (sets[r["source images"]] = sets[r["source images"]] || []).push(r); });
    Object.keys(sets).forEach(function (s) {
      if (Object.keys(sets).length > 1) box.append(el("p", {class: "note", text: "source images: " + s}));
      sets[s].forEach(function (r) { box.append(fn(r)); });
    });
  }
  function thumb(src, caption) {
    var fig = el("figure", null, src ? el("img", {src: src, alt: caption}) : el("span", {text: "(no image)"}));
    fig.append(el("figcaption", {text: caption}));
    return fig;
  }
  /* Gallery widgets, chosen by the analysis's registration (gallery=, drill=); they name
     columns given there, never an analysis. */
  function classLink(b) {
    var link = el("a", {href: "#class-" + b, text: classInfo(b).name});
    link.addEventListener("click", function (e) { e.preventDefault(); openClass(b); });
    return link;
  }
  function predictions(name, g, rows, named) {  // images with each model's predicted class
    var s = g.spec, skip = [s.by, s.truth, "image"].concat(s.skip || []);
    var models = g.columns.filter(function (x) { return skip.indexOf(x) < 0; });
    var th = el("div", {class: "thumbs"});
    rows.forEach(function (r) {
      var fig = thumb(imageSrc(name, r.image), s.label + ": " + r[s.truth]);
      if (named) fig.lastChild.prepend(classLink(r[s.by]), el("br"));
      models.forEach(function (m) {
        var ok = r[m] === r[s.truth];
        fig.lastChild.append(el("br"), swatch(colour(m)),
          el("span", {class: ok ? "ok" : "bad", text: m + ": " + r[m] + (ok ? " \u2713" : " \u2717")}));
      });
      th.append(fig);
    });
    return th;
  }
  function maps(name, g, r) {  // an image, the source model's map and each model's map
    var s = g.spec, th = el("div", {class: "thumbs"});
    th.append(thumb(imageSrc(name, r.image), s.label + ": " + r[s.truth]));
    th.append(thumb(imageSrc(name, r["cam source"]), s.source));
    Object.keys(r).filter(function (k) { return k.slice(0, 4) === "cam " && k !== "cam source"; })
      .forEach(function (k) {
        var m = k.slice(4), f = thumb(imageSrc(name, r[k]), m + ": " + s.score + " " +
          fmt(r[s.score + " " + m], "float"));
        f.lastChild.prepend(swatch(colour(m)));
        th.append(f);
      });
    return th;
  }
  function strips(name, rows, box, label) {  // a class's image and its views, with counts
    rows.forEach(function (r) {
      box.append(el("div", {class: "strip"}, el("img", {src: imageSrc(name, r.image),
        alt: label + " views"})), el("p", {class: "note",
        text: r["source images"] + ": " + r.images + " image(s) \u00d7 " + r.views + " view(s) = " +
              r.samples + " samples"}));
      if (r.samples <= META.fewSamples) {
        box.append(el("p", {class: "note resolution", text: "This class's per-class measures take only " +
          (r.samples + 1) + " values (steps of " + (100 / r.samples).toFixed(0) + "%). " + META.remedy}));
      }
    });
  }
  function sectionGallery(host) {  // an analysis's gallery over every source class
    var name = host.dataset.analysis, g = META.galleries[name];
    if (!g) return;
    var rows = asObjects(g.columns, g.rows), shown = 6;
    host.append(el("p", null, el("b", {text: g.spec.title}),
      el("span", {class: "note", text: " (" + rows.length + " examples; " + g.spec.note + ")"})));
    if (g.spec.widget === "predictions") { host.append(predictions(name, g, rows, true)); return; }
    var list = el("div");
    function fill(n) {
      list.replaceChildren();
      rows.slice(0, n).forEach(function (r) {
        list.append(el("p", {class: "note"}, classLink(r[g.spec.by])));
        if (g.spec.widget === "maps") list.append(maps(name, g, r));
        else strips(name, [r], list, classInfo(r[g.spec.by]).name);
      });
    }
    fill(shown);
    host.append(list);
    if (rows.length > shown) {
      var more = el("button", {type: "button", text: "show all " + rows.length});
      more.addEventListener("click", function () { fill(rows.length); more.remove(); });
      host.append(more);
    }
  }
  function panel(p, c, info, box, used) {  // one registered drill-down panel of class c
    if (p.widget === "gallery") {
      var g = META.galleries[p.analysis];
      if (!g) return;
      var rows = galleryRows(p.analysis, g.spec.by || "class", c);
      if (!rows.length) return;
      box.append(el("h4", {text: p.heading}));
      if (g.spec.widget === "predictions") box.append(predictions(p.analysis, g, rows, false));
      else if (g.spec.widget === "maps") rows.forEach(function (r) { box.append(maps(p.analysis, g, r)); });
      else strips(p.analysis, rows, box, info.name);
      if (p.note) box.append(el("p", {class: "note", text: p.note}));
      return;
    }
    var t = table(p.analysis, p.table), hit = rowsOf(t, c);
    if (!hit.length) return;
    used.push(t);
    box.append(el("h4", {text: p.heading}));
    if (p.widget === "bars") {
      bySet(asObjects(t.d.columns, hit), function (r) {
        return bar(shortModel(r.model), colour(r.model), [{v: r[p.value], colour: colour(r.model) || "#999"}],
                   pct(r[p.value]));
      }, box);
      return;
    }
    var cols = t.d.columns.filter(function (x) { return x.slice(0, p.prefix.length) === p.prefix; });
    var legend = el("div", {class: "legend"});
    cols.forEach(function (b, j) {
      legend.append(el("span", null, swatch(TARGET_COLOURS[j % 10]), b.slice(p.prefix.length, -1)));
    });
    box.append(legend);
    bySet(asObjects(t.d.columns, hit), function (r) {
      return bar(r.model, colour(r.model), cols.map(function (b, j) {
        return {v: r[b], colour: TARGET_COLOURS[j % 10], title: b + " = " + pct(r[b])};
      }), pct(r[cols[0]]));
    }, box);
  }
  function openClass(c) {
    var info = classInfo(c), box = document.createDocumentFragment(), used = [];
    var close = el("button", {class: "close", type: "button", "aria-label": "close", text: "\u00d7"});
    close.addEventListener("click", closeClass);
    box.append(close, el("h2", {text: info.name + (info.wnid ? " (" + info.wnid + ")" : "")}),
               el("p", {class: "note", text: "source class " + c + " \u00b7 Esc closes"}));
    if (META.droppedImages) {
      box.append(el("p", {class: "note", text: META.droppedImages + " thumbnails were left out to keep " +
        "the report within its size budget; the audit folder's images/*.json has them all."}));
    }
    META.panels.forEach(function (p) { panel(p, c, info, box, used); });
    TABLES.forEach(function (t) {
      if (t.d.classCol < 0 || used.indexOf(t) >= 0) return;
      var rows = rowsOf(t, c);
      if (!rows.length) return;
      box.append(el("h4", {text: t.d.analysis + " / " + t.d.key}));
      var head = el("tr"), body = el("tbody");
      if (rows.length === 1) {  // one row: column | value, top to bottom
        t.d.columns.forEach(function (x, i) {
          body.append(el("tr", null, el("th", {class: "s", text: x}),
                         el("td", {class: t.num[i] ? null : "s", text: fmt(rows[0][i], t.d.kinds[i])})));
        });
        box.append(el("table", {class: "kv"}, body));
        return;
      }
      t.d.columns.forEach(function (x, i) { head.append(el("th", {class: t.num[i] ? null : "s", text: x})); });
      rows.slice(0, 20).forEach(function (r) {
        var tr = el("tr");
        r.forEach(function (v, i) { tr.append(el("td", {class: t.num[i] ? null : "s", text: fmt(v, t.d.kinds[i])})); });
        body.append(tr);
      });
      if (rows.length > 20) box.append(el("p", {class: "note", text: "first 20 of " + rows.length + " rows"}));
      box.append(el("div", {class: "wrap"}, el("table", null, el("thead", null, head), body)));
    });
    drill.replaceChildren(box);
    drill.hidden = false;
    drill.dataset.cls = c;
    drill.scrollTop = 0;
    if (history.replaceState) history.replaceState(null, "", "#class-" + c);
  }
  function closeClass() {
    drill.hidden = true;
    if (history.replaceState) history.replaceState(null, "", location.pathname + location.search);
  }

  /* ---------------------------------------------------------------- page */
  function classFinder() {
    var seen = {}, list = el("datalist", {id: "ts-classes"});
    TABLES.forEach(function (t) {
      if (t.d.classCol < 0 || t.d.nameCol < 0) return;
      t.d.rows.forEach(function (r) {
        var c = r[t.d.classCol];
        if (c === null || seen[c] !== undefined) return;
        var label = r[t.d.nameCol] + " (" + r[t.d.wnidCol] + ")";
        seen[c] = label;
        list.append(el("option", {value: label}));
      });
    });
    var keys = Object.keys(seen);
    if (!keys.length) return null;
    var input = el("input", {type: "search", list: "ts-classes", placeholder: "open a source class (" +
                             keys.length + ")", "aria-label": "open a source class"});
    input.addEventListener("change", function () {
      var v = input.value.trim().toLowerCase();
      var hit = keys.filter(function (k) { return seen[k].toLowerCase() === v; })[0] ||
                keys.filter(function (k) { return seen[k].toLowerCase().indexOf(v) >= 0; })[0];
      if (v && hit !== undefined) openClass(+hit);
    });
    return el("span", null, input, list);
  }
  function toc() {
    var nav = el("nav", {class: "toc"});
    Array.prototype.forEach.call(document.querySelectorAll("h2"), function (h, i) {
      if (!h.id && !h.closest("#drill")) h.id = "section-" + i;
      if (h.id) nav.append(el("a", {href: "#" + h.id, text: h.textContent}));
    });
    var finder = classFinder();
    if (finder) nav.append(finder);
    var h1 = document.querySelector("h1");
    if (h1) h1.after(nav);
  }
  Array.prototype.forEach.call(document.querySelectorAll(".ts-table"), function (host) {
    var d = readJSON(host.dataset.src);
    if (d.chart) (d.chart.kind === "heatmap" ? heatmap : chart)(d, host);
    TABLES.push(new Table(host, d));
  });
  Array.prototype.forEach.call(document.querySelectorAll("a.evidence"), function (a) {
    if (!document.getElementById(a.getAttribute("href").slice(1))) a.remove();
  });
  Array.prototype.forEach.call(document.querySelectorAll(".ts-gallery"), sectionGallery);
  toc();
  document.addEventListener("keydown", function (e) { if (e.key === "Escape" && !drill.hidden) closeClass(); });
  var m = /^#class-(\d+)$/.exec(location.hash);
  if (m) openClass(+m[1]);
  window.transferscope = {openClass: openClass, closeClass: closeClass, tables: TABLES};
  window.addEventListener("load", function () {
    var imgs = Array.prototype.slice.call(document.images);
    document.body.dataset.images = imgs.length;
    document.body.dataset.imagesLoaded = imgs.filter(function (x) { return x.complete && x.naturalWidth > 0; }).length;
  });
