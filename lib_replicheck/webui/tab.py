"""The web UI's Replicheck tab: the pack manager's buttons, the table of packs and one message line.

Gradio is the web UI's own: the module is handed in (`PacksTab(gr, ...)`) and only used when the
tab is built or a button answers, so this imports without it. Every answer is HTML made by
packs_page.py and panel.py, escaped; errors are shown there, never raised into gradio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from lib_replicheck.errors import ReplicheckError
from lib_replicheck.webui import packs_page
from lib_replicheck.registry.recipe_choices import ChoiceError, RecipeChoices
from lib_replicheck.webui.pack_jobs import LIST_LABEL, SAMPLE_LABEL, TAB_LABELS, UNPINNED_LABEL
from lib_replicheck.webui.panel import esc

if TYPE_CHECKING:
    from lib_replicheck.webui.pack_jobs import PackManager
    from lib_replicheck.webui.service import CheckService


def message(text: str, error: bool = False) -> str:
    """One line under the buttons, red for an error."""
    return f"<p class='{'rc-error-text' if error else 'rc-message'}'>{esc(text)}</p>"


def refresh_message(manager: PackManager) -> tuple[str, bool]:
    """What reading the registries gave: packs listed, and which registries could not be read."""
    count = len(manager.registries())
    bad = len(manager.errors)
    read = count - bad
    text = (f"Read {read} of {count} registr{'y' if count == 1 else 'ies'}: {len(manager.available)} pack(s) listed."
            if bad else f"Read {count} registr{'y' if count == 1 else 'ies'}: {len(manager.available)} pack(s) listed.")
    if bad:
        text += " Could not read: " + "; ".join(manager.errors)
    return text, bool(bad)


class PacksTab:
    """The tab's callbacks; `build()` is what the web UI's on_ui_tabs asks for."""

    def __init__(self, gr, manager: PackManager, service: CheckService, audits=None,
                 run_pip: Callable[[str, str], object] | None = None):
        self.gr = gr
        self.manager = manager
        self.service = service
        self.audits = audits  # webui/audits.AuditJobs: "Check a folder"
        self.run_pip = run_pip  # the web UI's pip helper, run_pip(command, desc): "Install builder packages"

    def page(self) -> str:
        """The table of installed and downloadable packs, as it is now."""
        from lib_replicheck.webui.api_models import pack_model  # pydantic: the web UI's, not needed to import

        m = self.manager
        m.read_local()  # the shipped registry is a file: its packs and recipes are listed before any click
        return packs_page.render([pack_model(p, self.service) for p in m.installed()], m.available, m.errors,
                                 refreshed=m.refreshed is not None)

    def names(self) -> list[str]:
        self.manager.read_local()
        return sorted({p.name for p in self.manager.installed()} | {p.name for p in self.manager.available})

    def suggested(self) -> str | None:
        """The pack chosen when the tab opens: the recipe to build first, until it is installed."""
        names = self.names()
        have = {p.name for p in self.manager.installed()}
        return packs_page.SUGGESTED if packs_page.SUGGESTED in names and packs_page.SUGGESTED not in have else None

    def _action(self, fn: Callable[[str], object], name: str, done: str) -> tuple[str, str]:
        if not name:
            return self.page(), message("Choose a pack first.", True)
        try:
            fn(name)
        except ReplicheckError as e:
            return self.page(), message(str(e), True)
        return self.page(), message(done)

    def refresh(self):
        """Read the registries (the only button that fetches a list)."""
        try:
            self.manager.refresh()
            text, error = refresh_message(self.manager)
        except Exception as e:  # noqa: BLE001 - shown to the user, never raised into gradio
            text, error = f"Could not read the registries: {type(e).__name__}: {e}", True
        return self.page(), self.gr.update(choices=self.names()), message(text, error)

    def reload(self):
        """The table and the pack list as they are now (page load, a download that ended)."""
        return self.page(), self.gr.update(choices=self.names())

    def download(self, name):
        return self._action(self.manager.start_download, name, f"Downloading {name}: progress below.")

    def cancel(self, name):
        return self._action(self.manager.cancel, name, f"Cancelling the download or build of {name}.")

    def build_recipe(self, name, accept_unpinned=False, sample=0, list_path=""):
        """Build a recipe here (in the background: progress below, Cancel stops it), with the choices the
        tab offers beside Build (files without a published sha256, a sample, your own list); one that
        needs a choice not made says which field to fill. One that needs the builder's packages says
        so before anything starts, and which button installs them."""
        from lib_replicheck.registry.parse_recipe import MissingPackages

        entry = next((p for p in self.manager.available if p.name == name), None)
        if name and entry is not None and entry.kind == "pack":
            return self.page(), message(f"{name} is a prebuilt pack: use Download.", True)
        if not name:
            return self.page(), message("Choose a pack first.", True)
        try:
            n = int(sample or 0) or None  # the field's 0: the whole list
        except (TypeError, ValueError, OverflowError):
            n = sample  # not a number: RecipeChoices says so
        try:
            choices = RecipeChoices(accept_unpinned=bool(accept_unpinned), sample=n,
                                    list_path=str(list_path or "").strip() or None)
            self.manager.start_download(name, choices)
        except ChoiceError as e:
            return self.page(), message(e.named(TAB_LABELS) + ".", True)
        except MissingPackages as e:
            return self.page(), message(
                f"{name} reads a parquet list and fetches its images with img2dataset: {', '.join(e.packages)} "
                f"{'is' if len(e.packages) == 1 else 'are'} not installed in this web UI. Press Install builder "
                "packages (the web UI's pip installs them, keeping its own packages at their versions), then "
                "Build again.", True)
        except ReplicheckError as e:
            return self.page(), message(str(e), True)
        vectors = entry is not None and getattr(entry, "list", None) is not None and entry.list.format == "embeddings"
        return self.page(), message(f"Building {name} here: " + ("downloading its embedding files, then indexing them"
                                                                 if vectors else "fetching its images, then embedding")
                                    + "; progress below.")

    def install_builder(self):
        """Install the builder's packages (pyarrow, img2dataset) with the web UI's pip, every package
        the web UI has kept at its version (as install.py does)."""
        from lib_replicheck.pipinstall import by_hand, dist_name, pip_install, probe
        from lib_replicheck.registry.parse_recipe import BUILDER_PACKAGES, missing_builder_packages

        missing = missing_builder_packages()
        if not missing:
            return message("The builder's packages (" + ", ".join(m for _, m in BUILDER_PACKAGES)
                           + ") are installed: every recipe can be built here.")
        if self.run_pip is None:
            return message(f"Installing packages is not available here: run {by_hand(missing)}", True)
        errors = pip_install(missing, self.run_pip, "replicheck builder package")
        modules = dict(BUILDER_PACKAGES)
        found = probe([(dist_name(s), modules[s]) for s in missing])
        bad = [s for s in missing if not found.get(dist_name(s), {}).get("ok")]
        if bad:
            why = "; ".join(f"{s}: {errors.get(dist_name(s)) or found.get(dist_name(s), {}).get('error', 'not installed')}"
                            for s in bad)
            return message(f"Could not install {', '.join(bad)} ({why}). Install by hand: {by_hand(bad)}", True)
        got = ", ".join(f"{dist_name(s)} {found[dist_name(s)].get('version') or ''}".strip() for s in missing)
        return message(f"Installed {got} with the web UI's pip: parquet recipes can be built now.")

    def verify(self, name):
        return self._action(self.manager.verify, name, f"{name}: every file matches its sha256.")

    def remove(self, name):
        """The pack, and what an unfinished build or download of it left (its work folder)."""
        if not name:
            return self.page(), message("Choose a pack first.", True)
        try:
            removed = self.manager.remove(name)
        except ReplicheckError as e:
            return self.page(), message(str(e), True)
        pack = any(p.name == name for p in removed)
        work = any(p.name != name for p in removed)
        what = " (and the work folder of an unfinished build or download)" if pack and work else \
            ": the work folder of an unfinished build or download" if work else ""
        return self.page(), message(f"Removed {name}{what}.")

    def check_folder(self, folder):
        """Start checking a folder on the server; yields its progress until the report is written
        (the job goes on in its thread if the page goes away)."""
        import time

        from lib_replicheck.webui.audits import job_html

        if self.audits is None:
            yield message("Checking a folder is not available here.", True)
            return
        try:
            job = self.audits.start(folder)
        except ReplicheckError as e:
            yield message(str(e), True)
            return
        while job.running:
            yield job_html(job)
            time.sleep(0.5)
        yield job_html(job)

    def cancel_folder(self):
        running = [j for j in (self.audits.jobs.values() if self.audits else ()) if j.running]
        for j in running:
            self.audits.cancel(j.id)
        return message("Cancelling: the report will hold the images checked so far." if running
                       else "No folder is being checked.")

    def build(self) -> list[tuple]:
        """The tab inside its own Blocks, as on_ui_tabs returns it: [(blocks, title, elem_id)]."""
        gr = self.gr
        with gr.Blocks(analytics_enabled=False) as tab:
            gr.HTML("<p>Packs are indexes of training images that replicheck searches. They are kept in "
                    f"<code>{esc(str(self.service.packs_dir))}</code>. Nothing is downloaded until you click.</p>")
            with gr.Row():
                name = gr.Dropdown(label="Pack", choices=self.names(), value=self.suggested(),
                                   elem_id="replicheck_pack_name")
                refresh = gr.Button("Refresh list", elem_id="replicheck_refresh")
                download = gr.Button("Download", variant="primary", elem_id="replicheck_download")
                build_button = gr.Button("Build", variant="primary", elem_id="replicheck_build")
                cancel = gr.Button("Cancel", elem_id="replicheck_cancel")
                verify = gr.Button("Verify", elem_id="replicheck_verify")
                remove = gr.Button("Remove", elem_id="replicheck_remove")
                install_builder = gr.Button("Install builder packages", elem_id="replicheck_install_builder")
            with gr.Row():  # what a recipe's Build takes, as `packs get` does on the command line
                accept_unpinned = gr.Checkbox(label=UNPINNED_LABEL, value=False, elem_id="replicheck_accept_unpinned")
                sample = gr.Number(label=SAMPLE_LABEL, value=0, precision=0, elem_id="replicheck_sample")
                list_path = gr.Textbox(label=LIST_LABEL, elem_id="replicheck_list_path")
            message_html = gr.HTML(elem_id="replicheck_message")
            gr.HTML("<div id='replicheck_downloads'></div>")
            table = gr.HTML(self.page, elem_id="replicheck_packs_table")  # callable: built again at each page load
            # clicked by the panel's script when a download ends, so the table follows it
            reload = gr.Button("Reload table", visible=False, elem_id="replicheck_reload")
            reload.click(fn=self.reload, outputs=[table, name])
            refresh.click(fn=self.refresh, outputs=[table, name, message_html])
            download.click(fn=self.download, inputs=[name], outputs=[table, message_html])
            build_button.click(fn=self.build_recipe, inputs=[name, accept_unpinned, sample, list_path],
                               outputs=[table, message_html])
            cancel.click(fn=self.cancel, inputs=[name], outputs=[table, message_html])
            verify.click(fn=self.verify, inputs=[name], outputs=[table, message_html])
            remove.click(fn=self.remove, inputs=[name], outputs=[table, message_html])
            install_builder.click(fn=self.install_builder, outputs=[message_html])
            gr.HTML("<h3>Check a folder</h3><p>Every image in a folder on the server (e.g. a day of "
                    "<code>outputs</code>) against the packs chosen in Settings; the report opens in a new tab.</p>")
            with gr.Row():
                folder = gr.Textbox(label="Folder on the server (absolute, or relative to the web UI's folder)",
                                    elem_id="replicheck_audit_folder",
                                    placeholder="outputs/txt2img-images/2024-05-01")
                check = gr.Button("Check folder", variant="primary", elem_id="replicheck_audit_start")
                stop = gr.Button("Cancel", elem_id="replicheck_audit_cancel")
            audit_html = gr.HTML(elem_id="replicheck_audit_status")
            check.click(fn=self.check_folder, inputs=[folder], outputs=[audit_html])
            stop.click(fn=self.cancel_folder, outputs=[audit_html])
        return [(tab, "Replicheck", "replicheck_tab")]
