"""replicheck as ComfyUI nodes: the same checker, packs, report and panel as the web UI extension.

The repository's root `__init__.py` is what ComfyUI loads from `custom_nodes/`; it hands over to
`register.py`. The node classes (`nodes.py`) take ComfyUI's modules as arguments or import them
lazily, so they run, and are tested, without ComfyUI.
"""
