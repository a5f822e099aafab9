"""The pack registries: lists of packs to download, the verified download and install, and the manager the web UI
and the command line share."""
