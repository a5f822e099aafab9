"""modules/shared.py (1.10.1): opts, cmd_opts and the option helpers it re-exports."""

import argparse

from modules import options
from modules.options import OptionInfo, options_section  # noqa: F401 - re-exported as in the web UI

class State:
    """modules/shared_state.State: the flags the samplers check each step, and the current job.
    As in 1.10.1, the UI path calls `end()` only when the generation succeeded (call_queue), the
    API path always (in a finally)."""

    interrupted = False
    skipped = False
    sampling_step = 0
    sampling_steps = 0
    job = ""
    job_count = 0

    def interrupt(self):
        self.interrupted = True

    def begin(self, job="(unknown)"):
        self.interrupted = self.skipped = False
        self.job = job
        self.job_count = -1

    def end(self):
        self.job = ""
        self.job_count = 0


class FakeModel:
    """What extensions read of shared.sd_model: the model family flags."""

    is_sdxl = False
    is_sd2 = False
    is_sd1 = True
    sd_checkpoint_info = None


state = State()
config_filename = None  # cmd_opts.ui_settings_file: config.json in the web UI's folder
sd_model = FakeModel()
# as modules/cmd_args.py defines them: --listen, --server-name, --port, --share, --ngrok among others
cmd_opts = argparse.Namespace(api_auth=None, skip_install=False, nowebui=False, freeze_settings=False, listen=False,
                              server_name=None, port=None, share=False, ngrok=None)
options_templates: dict = {}
opts = options.Options(options_templates, [])

# the web UI's own options that the processing loop reads
for _key, _default in (("samples_save", True), ("grid_save", True), ("return_grid", True), ("save_txt", False),
                       ("enable_pnginfo", True), ("overlay_inpaint", True), ("samples_format", "png"),
                       ("jpeg_quality", 80)):
    opts.add_option(_key, OptionInfo(_default, _key, section=("saving-images", "Saving images/grids")))
