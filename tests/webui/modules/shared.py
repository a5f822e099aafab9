"""modules/shared.py (1.10.1): opts, cmd_opts and the option helpers it re-exports."""

import argparse

from modules import options
from modules.options import OptionInfo, options_section  # noqa: F401 - re-exported as in the web UI

cmd_opts = argparse.Namespace(api_auth=None, skip_install=False, nowebui=False, freeze_settings=False)
options_templates: dict = {}
opts = options.Options(options_templates, [])

# the web UI's own options that the processing loop reads
for _key, _default in (("samples_save", True), ("grid_save", True), ("return_grid", True), ("save_txt", False),
                       ("enable_pnginfo", True)):
    opts.add_option(_key, OptionInfo(_default, _key, section=("saving-images", "Saving images/grids")))
