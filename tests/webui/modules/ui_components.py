"""modules/ui_components.py (1.10.1): the web UI's own gradio components that settings and scripts use."""

from functools import wraps

import gradio as gr


class FormComponent:
    webui_do_not_create_gradio_pyi_thank_you = True

    def get_expected_parent(self):
        return gr.components.Form


gr.Dropdown.get_expected_parent = FormComponent.get_expected_parent


class ToolButton(gr.Button, FormComponent):
    """Small button with a single emoji as text, fits inside gradio forms."""

    @wraps(gr.Button.__init__)
    def __init__(self, value="", *args, elem_classes=None, **kwargs):
        elem_classes = elem_classes or []
        super().__init__(value=value, *args, elem_classes=["tool", *elem_classes], **kwargs)

    def get_block_name(self):
        return "button"


class FormRow(gr.Row, FormComponent):
    def get_block_name(self):
        return "row"


class DropdownMulti(gr.Dropdown, FormComponent):
    """Same as gr.Dropdown but always multiselect."""

    @wraps(gr.Dropdown.__init__)
    def __init__(self, **kwargs):
        kwargs['multiselect'] = True
        super().__init__(**kwargs)

    def get_block_name(self):
        return "dropdown"
