"""replicheck: find out whether a generated image copies a training image.

The package imports in a blink: numpy, faiss, torch and the rest are imported by the
functions that need them, so the web UI and the command line start fast.
"""

__version__ = "0.1.0"
