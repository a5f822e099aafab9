"""A small stand-in for AUTOMATIC1111 stable-diffusion-webui 1.10.1's `modules` package.

Only what replicheck touches, with the real names, signatures and call order (processing.py's
process_images_inner, scripts.py's ScriptRunner, script_callbacks.py, options.py, images.py).
The hooks run in the order the real loop runs them, so the extension meets the same sequence.
"""
