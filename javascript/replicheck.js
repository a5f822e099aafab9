// replicheck: the copy-warning panel under the txt2img / img2img gallery, live while generating.
// The panel HTML comes from /replicheck/v1/live, rendered by the server with every caption and URL
// escaped; this script only places it, badges the gallery thumbnails and follows the selection.
(function () {
    "use strict";

    var TABS = ["txt2img", "img2img"];
    var state = {};
    // Sent with every request: the routes know the web UI's own page by it (a page of another site
    // cannot add a header to a request without the web UI's consent).
    var HEADERS = {"X-Replicheck-Request": "1"};

    function get(path) {
        return fetch(path, {credentials: "same-origin", headers: HEADERS});
    }

    function app() {
        return typeof gradioApp === "function" ? gradioApp() : document;
    }

    function panelFor(tab) {
        var root = app();
        var panel = root.querySelector("#replicheck_panel_" + tab);
        if (panel) return panel;
        var anchor = root.querySelector("#" + tab + "_gallery_container") || root.querySelector("#" + tab + "_gallery");
        var results = root.querySelector("#" + tab + "_results");
        if (!anchor && !results) return null;
        panel = document.createElement("div");
        panel.id = "replicheck_panel_" + tab;
        panel.className = "replicheck-panel";
        if (anchor && anchor.parentNode) {
            anchor.parentNode.insertBefore(panel, anchor.nextSibling);
        } else {
            results.appendChild(panel);
        }
        panel.addEventListener("click", function (e) {
            if (e.target && e.target.classList && e.target.classList.contains("rc-show-all")) {
                select(tab, null);
            }
        });
        return panel;
    }

    function thumbnails(tab) {
        var gallery = app().querySelector("#" + tab + "_gallery");
        return gallery ? Array.prototype.slice.call(gallery.querySelectorAll(".thumbnail-item")) : [];
    }

    function badge(tab) {
        var s = state[tab];
        if (!s || !s.verdicts) return;
        var thumbs = thumbnails(tab);
        var offset = Math.max(0, thumbs.length - s.verdicts.length);  // the grid comes first
        thumbs.forEach(function (t, i) {
            var v = i >= offset ? s.verdicts[i - offset] : null;
            var copy = i >= offset && s.flagged && s.flagged[i - offset];
            if (v && (copy || v === "not checked")) {  // a match already in the input is no badge
                t.setAttribute("data-replicheck", v.replace(/ /g, "-"));
                t.setAttribute("title", "replicheck: " + v);
            } else {
                t.removeAttribute("data-replicheck");
                t.removeAttribute("title");
            }
        });
    }

    function select(tab, index) {
        var panel = panelFor(tab);
        if (!panel) return;
        var inner = panel.querySelector(".rc-panel");
        if (!inner) return;
        var cards = inner.querySelectorAll(".rc-card");
        var any = false;
        for (var i = 0; i < cards.length; i++) {
            var on = index !== null && cards[i].getAttribute("data-index") === String(index);
            cards[i].classList.toggle("rc-selected", on);
            any = any || on;
        }
        if (any) {
            inner.setAttribute("data-selected", String(index));
        } else {
            inner.removeAttribute("data-selected");
        }
        var all = inner.querySelector(".rc-show-all");
        if (any && !all) {
            all = document.createElement("button");
            all.type = "button";
            all.className = "rc-show-all";
            all.textContent = "Show all images";
            inner.insertBefore(all, inner.children[1] || null);
        }
        if (!any && all) all.remove();
    }

    function onGalleryClick(tab, e) {
        var thumb = e.target && e.target.closest ? e.target.closest(".thumbnail-item") : null;
        if (!thumb) return;
        var thumbs = thumbnails(tab);
        var s = state[tab] || {};
        var offset = Math.max(0, thumbs.length - (s.verdicts || []).length);
        var i = thumbs.indexOf(thumb) - offset;
        select(tab, i >= 0 ? i : null);
    }

    function poll(tab) {
        var s = state[tab] || (state[tab] = {seq: -1, verdicts: [], busy: false, tick: 0, active: 0});
        s.tick += 1;
        var idle = s.state !== "checking" && Date.now() > s.active;
        if (s.busy || document.hidden || (idle && s.tick % 5 !== 0)) return;
        s.busy = true;
        get("./replicheck/v1/live?tab=" + tab + "&since=" + s.seq)
            .then(function (r) { return r.ok ? r.json() : null; })
            .then(function (data) {
                if (!data) return;
                s.seq = data.seq;
                s.state = data.state;
                s.verdicts = data.verdicts || [];
                s.flagged = data.flagged || [];
                if (data.html !== null && data.html !== undefined) {
                    var panel = panelFor(tab);
                    if (panel) panel.innerHTML = data.html;  // server-rendered, every value escaped
                }
                badge(tab);
            })
            .catch(function () { /* the web UI is restarting; try again next tick */ })
            .then(function () { s.busy = false; });
    }

    // The Replicheck tab: progress of pack downloads, built with textContent (names are data).
    var downloadsBusy = false;
    var activeDownloads = {};

    function reloadTable(jobs) {
        // a download that ended changes the table: ask the tab to render it again
        var ended = false;
        jobs.forEach(function (j) {
            if (activeDownloads[j.name] && !j.active) ended = true;
            activeDownloads[j.name] = j.active;
        });
        var button = app().querySelector("#replicheck_reload");
        if (ended && button) button.click();
    }

    function renderDownloads(box, jobs) {
        box.textContent = "";
        jobs.forEach(function (j) {
            var row = document.createElement("div");
            row.className = "rc-download rc-download-" + j.state;
            var label = document.createElement("span");
            var pct = Math.round((j.fraction || 0) * 100);
            // a recipe's build says its stage (list, fetch, embed, index) and its counts in words
            label.textContent = j.name + ": " + (j.active && j.stage ? j.stage + " " : "") + j.state +
                (j.active ? " " + pct + "%" : "") + (j.message ? " - " + j.message : "") +
                (j.error ? " - " + j.error : "");
            var bar = document.createElement("progress");
            bar.max = 1;
            bar.value = j.fraction || 0;
            row.appendChild(bar);
            row.appendChild(label);
            box.appendChild(row);
        });
    }

    function pollDownloads() {
        var box = app().querySelector("#replicheck_downloads");
        if (!box || downloadsBusy || document.hidden || box.offsetParent === null) return;
        downloadsBusy = true;
        get("./replicheck/v1/downloads")
            .then(function (r) { return r.ok ? r.json() : null; })
            .then(function (jobs) {
                if (!jobs) return;
                renderDownloads(box, jobs);
                reloadTable(jobs);
            })
            .catch(function () {})
            .then(function () { downloadsBusy = false; });
    }

    function start() {
        TABS.forEach(function (tab) {
            state[tab] = {seq: -1, verdicts: [], flagged: [], busy: false, tick: 0, active: 0};
            var gallery = app().querySelector("#" + tab + "_gallery");
            if (gallery) gallery.addEventListener("click", function (e) { onGalleryClick(tab, e); }, true);
            var generate = app().querySelector("#" + tab + "_generate");
            if (generate) {
                generate.addEventListener("click", function () { state[tab].active = Date.now() + 600000; });
            }
            panelFor(tab);
            poll(tab);
        });
        setInterval(function () { TABS.forEach(poll); pollDownloads(); }, 1000);
        if (typeof onAfterUiUpdate === "function") {
            onAfterUiUpdate(function () { TABS.forEach(badge); });
        }
    }

    if (typeof onUiLoaded === "function") {
        onUiLoaded(start);
    } else {
        document.addEventListener("DOMContentLoaded", start);
    }
    window.replicheck = {poll: poll, select: select, state: state, pollDownloads: pollDownloads, badge: badge};
})();
