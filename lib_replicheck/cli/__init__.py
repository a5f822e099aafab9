"""The command line: `python -m lib_replicheck check|build|packs|demo|calibrate`."""
