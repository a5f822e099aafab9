"""The web UI side: the check service and live panel store, the generation hook, the panel and packs tab, the
HTTP API and the settings."""
