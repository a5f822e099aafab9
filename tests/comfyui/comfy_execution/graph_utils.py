"""ComfyUI's comfy_execution/graph_utils.py: ExecutionBlocker, as in v0.33.0."""


class ExecutionBlocker:
    """Return this from a node and any users will be blocked with the given error message.
    If the message is None, execution will be blocked silently instead."""

    def __init__(self, message):
        self.message = message
