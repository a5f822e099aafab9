"""ComfyUI's comfy/model_management.py: `unload_all_models()`, which frees every loaded model (the
list of loaded models here is the test's)."""

current_loaded_models = []


def unload_all_models():
    current_loaded_models.clear()
