"""ComfyUI's folder_paths: only `models_dir` (the test sets it to a temporary folder)."""
import os

base_path = os.path.dirname(os.path.realpath(__file__))
models_dir = os.path.join(base_path, "models")
