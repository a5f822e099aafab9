"""modules/ui_settings.py (1.10.1): the Settings page.

Every setting becomes a component built from its OptionInfo (`component(**component_args)`);
on each page load `get_value_for_setting` sends `gr.update(value=..., **component_args)` for every
one of them, and gradio turns that into `Component.update(**kwargs)` (`get_specific_update`), so
an argument that the component's `update` does not take fails the whole load with a 500.
"""

import gradio as gr

from modules import shared, ui_common
from modules.shared import opts
from modules.ui_components import FormRow


def get_value_for_setting(key):
    value = getattr(opts, key)

    info = opts.data_labels[key]
    args = info.component_args() if callable(info.component_args) else info.component_args or {}
    args = {k: v for k, v in args.items() if k not in {'precision'}}

    return gr.update(value=value, **args)


def create_setting_component(key, is_quicksettings=False):
    def fun():
        return opts.data[key] if key in opts.data else opts.data_labels[key].default

    info = opts.data_labels[key]
    t = type(info.default)

    args = info.component_args() if callable(info.component_args) else info.component_args

    if info.component is not None:
        comp = info.component
    elif t == str:
        comp = gr.Textbox
    elif t == int:
        comp = gr.Number
    elif t == bool:
        comp = gr.Checkbox
    else:
        raise Exception(f'bad options item type: {t} for key {key}')

    elem_id = f"setting_{key}"

    if info.refresh is not None:
        with FormRow():
            res = comp(label=info.label, value=fun(), elem_id=elem_id, **(args or {}))
            res.refresh_button = ui_common.create_refresh_button(res, info.refresh, info.component_args,
                                                                 f"refresh_{key}")
    else:
        res = comp(label=info.label, value=fun(), elem_id=elem_id, **(args or {}))

    return res


class UiSettings:
    """The Settings tab: one component per setting, Apply settings, and the values sent on page load."""

    def run_settings(self, *args):
        changed = []

        for key, value, comp in zip(opts.data_labels.keys(), args, self.components):
            assert opts.same_type(value, opts.data_labels[key].default), \
                f"Bad value for setting {key}: {value}; expecting {type(opts.data_labels[key].default).__name__}"

        for key, value, comp in zip(opts.data_labels.keys(), args, self.components):
            if opts.set(key, value):
                changed.append(key)

        if shared.config_filename:
            opts.save(shared.config_filename)
        return opts.dumpjson(), f'{len(changed)} settings changed{": " if changed else ""}{", ".join(changed)}.'

    def create_ui(self):
        self.components = []
        self.component_dict = {}
        with gr.Blocks(analytics_enabled=False) as self.interface:
            self.submit = gr.Button(value="Apply settings", variant='primary', elem_id="settings_submit")
            self.result = gr.HTML(elem_id="settings_result")
            for k, item in opts.data_labels.items():
                component = create_setting_component(k)
                self.component_dict[k] = component
                self.components.append(component)
            self.text_settings = gr.Textbox(elem_id="settings_json", value=lambda: opts.dumpjson(), visible=False)

            self.submit.click(fn=lambda *args: self.run_settings(*args), inputs=self.components,
                              outputs=[self.text_settings, self.result])

            component_keys = [k for k in opts.data_labels.keys() if k in self.component_dict]

            def get_settings_values():
                return [get_value_for_setting(key) for key in component_keys]

            self.interface.load(fn=get_settings_values, inputs=[], outputs=[self.component_dict[k] for k in component_keys],
                                queue=False)
        return self.interface
