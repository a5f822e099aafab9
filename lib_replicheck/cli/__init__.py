"""The command line: `python -m lib_replicheck check|build|packs|demo|calibrate`."""

#: Exit status, as grep has it: 0 no copy found, 1 a copy found, 2 an error.
EXIT_OK, EXIT_COPY, EXIT_ERROR = 0, 1, 2
