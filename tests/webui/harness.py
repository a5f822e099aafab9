"""Start the fake web UI with the extension loaded the way the real one loads it.

The extension's script file is imported from its folder, its settings registered through
on_ui_settings, its UI built inside a real gradio Blocks, its scripts put into ScriptRunners for
txt2img and img2img, and its API mounted on a real FastAPI app next to /sdapi/v1.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


class FakeWebUI:
    def __init__(self, root: Path, api_auth: str | None = None):
        os.environ["FAKE_WEBUI_ROOT"] = str(root)
        if str(HERE) not in sys.path:
            sys.path.insert(0, str(HERE))
        import gradio as gr
        from fastapi import FastAPI

        from modules import images, paths, processing, script_callbacks, scripts, shared
        from modules.api.api import Api

        assert paths.script_path == str(root), "the fake web UI can only be started once per process"
        self.root = root
        self.outdir = str(root / "outputs" / "txt2img-images")
        self.shared, self.processing, self.images, self.callbacks = shared, processing, images, script_callbacks
        shared.cmd_opts.api_auth = api_auth
        self.module = scripts.load_script_module(str(REPO / "scripts" / "replicheck.py"))
        script_callbacks.ui_settings_callback()
        self.runners, self.scripts, default_args = {}, {}, {}
        for tab, is_img2img in (("txt2img", False), ("img2img", True)):
            script = self.module.ReplicheckScript()
            script.filename = str(REPO / "scripts" / "replicheck.py")
            with gr.Blocks():
                controls = script.ui(is_img2img)
            runner = scripts.ScriptRunner()
            runner.add(script, is_img2img, len(controls))
            self.runners[tab], self.scripts[tab] = runner, script
            default_args[script.title().lower()] = [c.value for c in controls]
        self.default_args = default_args
        shared.config_filename = str(root / "config.json")
        from modules.ui_settings import UiSettings

        self.settings_ui = UiSettings()
        self.settings_blocks = self.settings_ui.create_ui()
        self.app = FastAPI()
        self.api = Api(self.app, self.runners, default_args, self.outdir)
        script_callbacks.app_started_callback(None, self.app)

    @property
    def packs_dir(self) -> Path:
        return Path(self.module.service.packs_dir)

    def _p(self, cls, tab, enabled, **kw):
        kw.setdefault("outpath_samples", self.outdir)
        kw.setdefault("outpath_grids", self.outdir + "-grids")
        p = cls(**kw)
        p.scripts = self.runners[tab]
        p.script_args = [None] + [enabled]
        return p

    def txt2img(self, enabled=True, **kw):
        """A generation from the txt2img tab (UI path, through call_queue: images are saved)."""
        from modules.call_queue import wrap_gradio_gpu_call

        p = self._p(self.processing.StableDiffusionProcessingTxt2Img, "txt2img", enabled, **kw)
        return p, wrap_gradio_gpu_call(self.processing.process_images)(p)

    def img2img(self, init_images, enabled=True, **kw):
        from modules.call_queue import wrap_gradio_gpu_call

        p = self._p(self.processing.StableDiffusionProcessingImg2Img, "img2img", enabled, init_images=init_images, **kw)
        return p, wrap_gradio_gpu_call(self.processing.process_images)(p)

    def gradio_app(self, blocks, auth=None):
        """A real gradio App serving `blocks` (as `demo.launch` builds it), with gradio's login when
        `auth` is a list of (user, password): pages and /run/predict then need its session cookie."""
        from gradio.routes import App

        blocks.auth = auth
        blocks.auth_message = None
        app = App.create_app(blocks)
        return app

    def set_option(self, key, value):
        self.shared.opts.set(key, value)
