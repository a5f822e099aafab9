"""Signing the images the web UI saves, and those its API returns, with the record of their check
(C2PA), when the user turns it on (Settings → Replicheck → Signed record).

Saved images are signed in the web UI's `image_saved` callback, after the web UI has written the
file with its own metadata (the PNG `parameters` text, JPEG/WebP EXIF), so that metadata is inside
what is signed and survives. The file is replaced whole once the signed copy validates.

The API (/sdapi/v1/txt2img, img2img) encodes each image of `processed.images` itself, with its
module-level `encode_pil_to_base64`: that function is wrapped once at app start, and signs the
bytes the web UI encoded. Which job and image a PIL image is comes from the image object itself:
the check remembers the very object the web UI appends to `processed.images` (its id, held with a
weak reference, so a recycled id never names another image). Nothing is written into the image,
so nothing reaches its PNG text. The grid, masks, previews and the extras API are not remembered
and pass through untouched.

Any failure leaves the image exactly as the web UI wrote or encoded it, logs one line and puts one
line in the panel.
"""

from __future__ import annotations

import base64
import binascii
import logging
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from lib_replicheck.report import Report

log = logging.getLogger("replicheck")

SIGN_OFF, SIGN_ON = "off", "sign"
SIGN_MODES = (SIGN_OFF, SIGN_ON)
#: The most images remembered for the API, the latest first kept (a few jobs' worth).
MAX_REMEMBERED = 1024
#: Where the web UI's API keeps `encode_pil_to_base64`: AUTOMATIC1111 and Forge (and Forge Neo) in
#: modules.api.api, SD.Next in modules.api.helpers (its generate.py calls helpers.encode_pil_to_base64).
API_ENCODER_MODULES = ("modules.api.api", "modules.api.helpers")
#: The attribute of the wrapper that holds the web UI's own function (wrapped once, however often
#: the scripts are reloaded).
ORIGINAL = "__replicheck_original__"
PLATFORM_NAMES = {"automatic1111": "AUTOMATIC1111 stable-diffusion-webui",
                  "forge": "Stable Diffusion WebUI Forge", "sdnext": "SD.Next"}


def generator(platform: str, version: str | None) -> tuple[str, str]:
    """The claim generator: the web UI's name and version (as it reports it, or 'unknown')."""
    return PLATFORM_NAMES.get(platform, platform), (str(version).strip() or "unknown") if version else "unknown"


class SavedImageSigner:
    """Signs saved images, and the images the API returns, for the hook's jobs; `home` holds this
    install's local certificate."""

    def __init__(self, service, home: str | Path, generator: tuple[str, str]):
        self.service = service
        self.home = Path(home)
        self.generator = generator
        self.signed = 0
        self.returned = RememberedImages()

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
        if not signing(state):
            return False
        try:
            self._sign(state, index, Path(filename))
        except Exception as e:  # noqa: BLE001 - a signing failure never touches the generation
            self._failed(state, f"The saved image {Path(filename).name} was not signed: {e}")
            return False
        self.signed += 1
        return True

    def _failed(self, state, message: str) -> None:
        log.warning("replicheck: %s", message)
        try:
            self.service.live.update(state.job, sign_error=message)
        except Exception:  # noqa: BLE001
            pass

    def _definition(self, state, index: int, title: str | None, context=None):
        """The credentials and the manifest definition of image `index` of the job (`context`: what the
        check ran with, when taken earlier; else now)."""
        from lib_replicheck.provenance import keys, record

        s = state.settings
        report = state.job.reports.get(index)
        if report is None:
            report = Report(image=f"image {index + 1}", error=state.reason or "not checked")
        creds = keys.credentials(self.home, s.sign_cert or None, s.sign_key or None, s.sign_tsa or None)
        context = context or self.context(state, index)
        return creds, record.manifest(record.assertion(report, context), context, title)

    def _sign(self, state, index: int, path: Path) -> None:
        from lib_replicheck.provenance import sign

        creds, definition = self._definition(state, index, path.name)
        sign.sign_file(path, path, definition, creds)

    # -- the images the API returns ------------------------------------------------------------

    def remember(self, image, state, index: int) -> None:
        """`image` is image `index` of the job: the object the web UI will hand to the API's encoder.
        What the check ran with is taken now, while its packs are loaded: the API encodes after the
        generation, when they may be unloaded or another generation's."""
        if image is not None and signing(state):
            self.returned.remember(image, Remembered(state, index, self.context(state, index)))

    def sign_returned(self, image, encoded):
        """The API's base64 of `image`, signed when the image is one of a signing job's; else, or on any
        failure (one log line, one panel line), `encoded` exactly as the web UI made it."""
        found = self.returned.find(image)
        if found is None or not isinstance(encoded, (bytes, str)):
            return encoded
        try:
            signed = base64.b64encode(self._sign_bytes(found, encoded))
        except Exception as e:  # noqa: BLE001 - a signing failure never breaks the API's answer
            self._failed(found.state, f"The image {found.index + 1} returned by the API was not signed: {e}")
            return encoded
        self.signed += 1
        return signed if isinstance(encoded, bytes) else signed.decode("ascii")

    def _sign_bytes(self, found: "Remembered", encoded) -> bytes:
        from lib_replicheck.provenance import ProvenanceError, container, sign

        if len(encoded) > container.MAX_FILE_BYTES * 4 // 3 + 4:
            raise ProvenanceError(f"more than the {container.MAX_FILE_BYTES} bytes signed")
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ProvenanceError("the web UI's encoding is not base64") from None
        kind = container.kind_of(data[:16])
        if kind is None:
            raise ProvenanceError("only PNG, JPEG and WebP images can carry a signed record")
        creds, definition = self._definition(found.state, found.index, None, found.context)
        return sign.sign_checked(data, kind, definition, creds, f"image {found.index + 1}")


def signing(state) -> bool:
    return state is not None and getattr(state.settings, "sign", SIGN_OFF) == SIGN_ON


@dataclass(frozen=True)
class Remembered:
    """An image of a signing job: the job's state, the image's index, what its check ran with."""

    state: object  # hook.JobState
    index: int
    context: object  # provenance.record.CheckContext


class RememberedImages:
    """The latest images of signing jobs, by object: id -> (weak reference, Remembered).

    PIL images are not hashable, so the key is id(image); the weak reference both keeps no image
    alive and proves, on lookup, that the id still names the same object."""

    def __init__(self, limit: int = MAX_REMEMBERED):
        self.limit = limit
        self._entries: OrderedDict[int, tuple] = OrderedDict()

    def remember(self, image, entry: Remembered) -> None:
        self._entries.pop(id(image), None)
        self._entries[id(image)] = (weakref.ref(image), entry)
        while len(self._entries) > self.limit:
            self._entries.popitem(last=False)

    def find(self, image) -> Remembered | None:
        """What was remembered of `image`, or None when it is not a remembered image."""
        entry = self._entries.get(id(image))
        if entry is None or entry[0]() is not image:
            return None
        return entry[1]

    def __len__(self) -> int:
        return len(self._entries)


def wrap_api_encoder(module, signer: SavedImageSigner) -> bool:
    """Replace `module.encode_pil_to_base64` by one that signs what the web UI's own function
    encoded (the web UI's function always runs first, and its bytes are kept on any failure).
    A reload wraps the web UI's function again, never a previous wrapper. False when the module
    has no such function."""
    current = getattr(module, "encode_pil_to_base64", None)
    if not callable(current):
        return False
    original = getattr(current, ORIGINAL, current)

    def encode_pil_to_base64(image):
        encoded = original(image)
        try:
            return signer.sign_returned(image, encoded)
        except Exception as e:  # noqa: BLE001 - never break the API's answer
            log.warning("replicheck: signing an image returned by the API failed: %s: %s", type(e).__name__, e)
            return encoded

    setattr(encode_pil_to_base64, ORIGINAL, original)
    encode_pil_to_base64.__doc__ = original.__doc__
    module.encode_pil_to_base64 = encode_pil_to_base64
    return True


def wrap_api_encoders(signer: SavedImageSigner) -> list[str]:
    """Wrap the API's encoder in whichever of API_ENCODER_MODULES the web UI has loaded; the names
    wrapped. At app start the web UI has created its API (and imported these) when it serves one;
    nothing is imported here, so a web UI without --api is left as it is."""
    import sys

    wrapped = []
    for name in API_ENCODER_MODULES:
        module = sys.modules.get(name)
        if module is not None and wrap_api_encoder(module, signer):
            wrapped.append(name)
    return wrapped
