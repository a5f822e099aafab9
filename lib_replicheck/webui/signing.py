"""Signing the images the web UI saves with the record of their check (C2PA), when the user turns
it on (Settings → Replicheck → Signed record).

It runs in the web UI's `image_saved` callback, after the web UI has written the file with its own
metadata (the PNG `parameters` text, JPEG/WebP EXIF), so that metadata is inside what is signed
and survives. The file is replaced whole once the signed copy validates; any failure leaves the
saved image exactly as the web UI wrote it, logs one line and puts one line in the panel.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lib_replicheck.report import Report

log = logging.getLogger("replicheck")

SIGN_OFF, SIGN_ON = "off", "sign"
SIGN_MODES = (SIGN_OFF, SIGN_ON)
PLATFORM_NAMES = {"automatic1111": "AUTOMATIC1111 stable-diffusion-webui",
                  "forge": "Stable Diffusion WebUI Forge", "sdnext": "SD.Next"}


def generator(platform: str, version: str | None) -> tuple[str, str]:
    """The claim generator: the web UI's name and version (as it reports it, or 'unknown')."""
    return PLATFORM_NAMES.get(platform, platform), (str(version).strip() or "unknown") if version else "unknown"


class SavedImageSigner:
    """Signs saved images for the hook's jobs; `home` holds this install's local certificate."""

    def __init__(self, service, home: str | Path, generator: tuple[str, str]):
        self.service = service
        self.home = Path(home)
        self.generator = generator
        self.signed = 0

    def context(self, state, index: int):
        from lib_replicheck.provenance.record import CheckContext

        s = state.settings
        tracker = state.tracker
        kw = dict(signal=tracker.signals.get(index) if tracker is not None else None,
                  prompt_hit=(state.prompt_hits or {}).get(index), prompt_checked=bool(s.prompt_check),
                  composite=state.job.tab == "img2img", generator=self.generator)
        checker = self.service.loaded_checker
        if checker is not None and not state.skip:
            return CheckContext.of_checker(checker, **kw)
        return CheckContext(tiers=dict(s.tiers), regions=s.regions, **kw)

    def sign_saved(self, state, index: int, filename: str) -> bool:
        """Sign the file the web UI just saved for image `index` of the job; False (one log line, one
        panel line) when it could not be, the file then untouched."""
        if state is None or getattr(state.settings, "sign", SIGN_OFF) != SIGN_ON:
            return False
        try:
            self._sign(state, index, Path(filename))
        except Exception as e:  # noqa: BLE001 - a signing failure never touches the generation
            message = f"The saved image {Path(filename).name} was not signed: {e}"
            log.warning("replicheck: %s", message)
            try:
                self.service.live.update(state.job, sign_error=message)
            except Exception:  # noqa: BLE001
                pass
            return False
        self.signed += 1
        return True

    def _sign(self, state, index: int, path: Path) -> None:
        from lib_replicheck.provenance import keys, record, sign

        s = state.settings
        report = state.job.reports.get(index)
        if report is None:
            report = Report(image=f"image {index + 1}", error=state.reason or "not checked")
        creds = keys.credentials(self.home, s.sign_cert or None, s.sign_key or None, s.sign_tsa or None)
        context = self.context(state, index)
        definition = record.manifest(record.assertion(report, context), context, path.name)
        sign.sign_file(path, path, definition, creds)
