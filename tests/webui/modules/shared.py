"""modules/shared.py (1.10.1): opts, cmd_opts and the option helpers it re-exports."""

import argparse

from modules import options
from modules.options import OptionInfo, options_section  # noqa: F401 - re-exported as in the web UI

class State:
    """modules/shared_state.State: the flags the samplers check each step."""

    interrupted = False
    skipped = False
    sampling_step = 0
    sampling_steps = 0
    job = ""

    def interrupt(self):
        self.interrupted = True

    def begin(self, job="(unknown)"):
        self.interrupted = self.skipped = False
        self.job = job

    def end(self):
        self.job = ""


class FakeModel:
    """What extensions read of shared.sd_model: the model family flags."""

    is_sdxl = False
    is_sd2 = False
    is_sd1 = True
    sd_checkpoint_info = None


state = State()
sd_model = FakeModel()
cmd_opts = argparse.Namespace(api_auth=None, skip_install=False, nowebui=False, freeze_settings=False)
options_templates: dict = {}
opts = options.Options(options_templates, [])

# the web UI's own options that the processing loop reads
for _key, _default in (("samples_save", True), ("grid_save", True), ("return_grid", True), ("save_txt", False),
                       ("enable_pnginfo", True)):
    opts.add_option(_key, OptionInfo(_default, _key, section=("saving-images", "Saving images/grids")))
