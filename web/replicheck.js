// replicheck's ComfyUI frontend: shows the Check node's verdict and nearest training images on the
// node, from the `ui` output ComfyUI sends when the node has run (message.replicheck_html). The HTML
// is the web UI panel's, built by lib_replicheck/webui/panel.py, where every caption, URL and name of
// a pack is escaped; nothing here builds markup from pack data.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const STYLE_ID = "replicheck-style";

function addStyle() {
  if (document.getElementById(STYLE_ID)) return;
  const link = document.createElement("link");
  link.id = STYLE_ID;
  link.rel = "stylesheet";
  link.href = api.apiURL("/replicheck/v1/style.css");
  document.head.appendChild(link);
}

function panelOf(node) {
  if (!node.replicheckPanel) {
    const el = document.createElement("div");
    el.className = "replicheck-comfy";
    el.style.cssText = "overflow:auto; max-height:480px; font-size:12px; color:var(--fg-color, #ddd);";
    el.textContent = "Replicheck: run the workflow to check its images";
    node.replicheckPanel = el;
    node.addDOMWidget("replicheck_panel", "replicheck", el, { serialize: false, hideOnZoom: false });
  }
  return node.replicheckPanel;
}

app.registerExtension({
  name: "replicheck.nodes",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "ReplicheckCheck" && nodeData.name !== "ReplicheckGate") return;
    addStyle();
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const el = panelOf(this);
      if (message?.replicheck_html?.length) {
        el.innerHTML = message.replicheck_html.join("");  // escaped server-side (panel.py)
      } else if (message?.replicheck_gate?.length) {
        el.textContent = "Replicheck Gate: " + message.replicheck_gate.join(" ");
      }
      const size = this.computeSize();
      this.setSize([Math.max(this.size[0], 360), Math.max(this.size[1], size[1] + 240)]);
      app.graph.setDirtyCanvas(true, true);
    };
  },
});
