import os
import tempfile

script_path = os.environ.get("FAKE_WEBUI_ROOT") or tempfile.mkdtemp(prefix="fake-webui-")
data_path = script_path
models_path = os.path.join(script_path, "models")
