"""The extension's settings: one definition used by the web UI's Settings page, the hook and the API.

Each setting is plain data here (key, default, label, hint, kind); `scripts/replicheck.py` turns
them into the web UI's OptionInfo objects. Keys carry the `replicheck_` prefix the web UI stores
them under in config.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from lib_replicheck.embedders.options import EmbedderOptions
from lib_replicheck.memorization.signal import DEFAULT_THRESHOLD
from lib_replicheck.regions import DEFAULT_MODE as DEFAULT_REGIONS, MODES as REGION_MODES, setting_mode
from lib_replicheck.thresholds import DEFAULT_TIERS, Tiers

ON_COPY_WARN = "Warn only"
ON_COPY_DONT_SAVE = "Warn and do not save the image"
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class SettingDef:
    key: str
    default: Any
    label: str
    info: str
    kind: str = "checkbox"  # checkbox | slider | number | dropdown | text | radio
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    multiselect: bool = False


def _tier(family: str, tier: str, label: str, source: str) -> SettingDef:
    t: Tiers = DEFAULT_TIERS[family]
    default = getattr(t, tier)
    if t.measure == "distance":
        return SettingDef(f"replicheck_{family}_{tier}", int(default if default is not None else -1), label,
                          f"default {default if default is not None else 'off'}; Hamming distance at or below "
                          f"which this verdict is given, -1 turns it off; {source}", "slider", minimum=-1, maximum=128,
                          step=1)
    return SettingDef(f"replicheck_{family}_{tier}", float(default if default is not None else 0.0), label,
                      f"default {default if default is not None else 'off (0)'}; similarity at or above which this "
                      f"verdict is given, 0 turns it off; {source}", "slider", minimum=0.0, maximum=1.0, step=0.01)


SETTINGS: tuple[SettingDef, ...] = (
    SettingDef("replicheck_enabled", True, "Check generated images for copies of training images",
               "default on; the default of the on/off box in txt2img and img2img"),
    SettingDef("replicheck_packs", [], "Packs to search",
               "default: every installed pack; packs live in models/replicheck/packs", "dropdown",
               multiselect=True),
    SettingDef("replicheck_top_k", 5, "Nearest training images to show per image", "default 5", "slider",
               minimum=1, maximum=20, step=1),
    _tier("sscd", "possible", "SSCD: possible copy at similarity",
          "the replication cut of Somepalli et al., CVPR 2023"),
    _tier("sscd", "likely", "SSCD: likely copy at similarity",
          "about 90% precision on DISC2021, Pizzi et al., CVPR 2022"),
    _tier("sscd", "duplicate", "SSCD: duplicate at similarity", "Somepalli et al.'s duplicate cut"),
    SettingDef("replicheck_regions", DEFAULT_REGIONS, "Search regions of each image (copies inside a larger picture)",
               f"default {DEFAULT_REGIONS}; fast searches boxes of the whole-image pass (about 2x the check), thorough "
               "adds passes at 1.5 to 3 times the size for smaller copies (about 15x); see the README", "radio",
               choices=REGION_MODES),
    _tier("pdq", "likely", "PDQ: likely copy at Hamming distance", "Meta's PDQ match threshold"),
    _tier("pdq", "duplicate", "PDQ: duplicate at Hamming distance", "no published cut"),
    _tier("clip", "possible", "CLIP: possible copy at similarity",
          "CLIP similarity is semantic, not evidence of a copy: no published cut"),
    SettingDef("replicheck_verify_online", False, "Verify CLIP candidates online (fetch the training image)",
               "default off; with a CLIP pack, after each image is checked (never while sampling), the training "
               "images of up to 3 candidates are fetched from their URLs (http(s) only, at most 32 MB and 9 s "
               "each, cached in models/replicheck/verify-cache) and compared with SSCD and PDQ: the verdict becomes "
               "SSCD's on the pair. Off, candidates read 'possible copy (unverified ...)'. Needs SSCD's weights"),
    SettingDef("replicheck_device", "cpu", "Device for the embedder",
               "default cpu, so replicheck never takes VRAM from Stable Diffusion; cuda is faster", "radio",
               choices=DEVICES),
    SettingDef("replicheck_keep_loaded", True, "Keep the model loaded between generations",
               "default on; off unloads it after each job to free memory, and the next job loads it again"),
    # the sizes are what `python bench/clip_memory.py` prints (float32)
    SettingDef("replicheck_clip_idle_minutes", 5, "Free a CLIP pack's model after this many minutes unused",
               "default 5; 0 keeps it. A CLIP pack's model holds 1,216 MB of memory for ViT-L-14 (the published "
               "PD12M and LAION embeddings) and 351 MB for ViT-B-32 (the image tower: the text tower is freed on "
               "loading), on the device set above. It is freed after this many minutes without a check, and on cuda also when a "
               "generation starts (sampling needs the memory); the next check loads it again", "number"),
    SettingDef("replicheck_remote_thumbnails", False, "Show thumbnails from the training images' web addresses",
               "default off: only thumbnails stored in the pack, captions and links are shown, and no request "
               "leaves this machine"),
    SettingDef("replicheck_on_copy", ON_COPY_WARN, "When an image is flagged", "default: warn only", "radio",
               choices=(ON_COPY_WARN, ON_COPY_DONT_SAVE)),
    SettingDef("replicheck_infotext", True, "Write the verdict into the generation parameters",
               "default on; e.g. 'Replicheck: likely copy 0.81 (pack)', in the PNG info and API responses"),
    SettingDef("replicheck_mem_enabled", True, "Memorization signal while sampling (Wen et al., ICLR 2024)",
               "default on; needs no pack: measures during the first sampling steps how strongly the prompt pulls "
               "towards a memorized training image. AUTOMATIC1111's own backend only"),
    SettingDef("replicheck_mem_steps", 1, "Memorization signal: steps to average", "default 1 (Wen et al.: AUC "
               "0.976 from the first step of one generation)", "slider", minimum=1, maximum=10, step=1),
    SettingDef("replicheck_mem_threshold", DEFAULT_THRESHOLD, "Memorization signal: threshold",
               f"default {DEFAULT_THRESHOLD}, calibrated for SD 1.x only (see the README); calibrate your model with "
               "/replicheck/v1/calibrate", "number"),
    SettingDef("replicheck_mem_mitigate", False, "Experimental: perturb the prompt when the signal is high",
               "default off; adds Gaussian noise (lambda 0.1, Somepalli et al., NeurIPS 2023) to the text "
               "conditioning for the rest of sampling; changes the image; recorded in the infotext"),
    SettingDef("replicheck_registries", "", "Pack registries",
               "default: the registry shipped with replicheck, read from disk (the demo pack and the recipes); "
               "several URLs or files separated by commas replace it. Read only when you open or refresh the "
               "Replicheck tab", "text"),
    SettingDef("replicheck_allowed_hosts", "", "Allowed host names for the API",
               "default: none beyond this machine's own (localhost, and its addresses and name with --listen); "
               "names, comma-separated, under which the web UI is also reached, e.g. a reverse proxy's "
               "(*.example.org for every name under it). Other names are refused: they are how DNS rebinding "
               "reaches the web UI. Also $REPLICHECK_ALLOWED_HOSTS", "text"),
    SettingDef("replicheck_check_input", True, "Also check the input image of img2img",
               "default on; a match already in the input is reported as such, not blamed on the model"),
    SettingDef("replicheck_sign", "off", "Signed record of the check in saved images (C2PA)",
               "default off; sign: each image the web UI saves or its API returns gets a signed C2PA manifest with "
               "the verdict, the packs and thresholds used and the memorization signal, written after the web "
               "UI's own PNG info (which stays). Read it back with `python -m lib_replicheck verify IMAGE`. "
               "Needs `pip install c2pa-python`. Without a certificate below, a local one is made once in "
               "models/replicheck/signing: it proves the image was not changed since, not who signed it",
               "radio", choices=("off", "sign")),
    SettingDef("replicheck_sign_cert", "", "Signed record: your certificate chain (PEM file)",
               "default empty: this install's local certificate; else the path of your certificate chain", "text"),
    SettingDef("replicheck_sign_key", "", "Signed record: your private key (PEM file, mode 600)",
               "default empty; a key file other users can read is refused", "text"),
    SettingDef("replicheck_sign_tsa", "", "Signed record: timestamp authority URL",
               "default empty: no timestamp, nothing leaves this machine; a URL is asked at each save", "text"),
    SettingDef("replicheck_prompt_check", True, "Compare the prompt with known memorized prompts",
               "default on; needs no pack: before sampling, the prompt is compared with the 500 prompts SD 1.x is "
               "known to copy a training image for (Webster 2023), also after light edits or with tags added"),
)
DEFAULTS = {s.key: s.default for s in SETTINGS}


def _int(v, default: int, lo: int, hi: int) -> int:
    try:
        return max(lo, min(hi, int(v)))
    except (TypeError, ValueError):
        return default


def _float(v, default: float) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return default
    return f if f > 0 else default


def _minutes(v, default: float) -> float:
    """A number of minutes, 0 (never) or more, at most a day; anything else is the default."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return default
    return f if 0 <= f <= 1440 else default


@dataclass
class Settings:
    """The values the hook and the API act on, read from the web UI's options (or defaults)."""

    enabled: bool = DEFAULTS["replicheck_enabled"]
    packs: list[str] = field(default_factory=list)
    top_k: int = DEFAULTS["replicheck_top_k"]
    tiers: dict[str, Tiers] = field(default_factory=lambda: dict(DEFAULT_TIERS))
    device: str = DEFAULTS["replicheck_device"]
    keep_loaded: bool = DEFAULTS["replicheck_keep_loaded"]
    clip_idle_minutes: float = DEFAULTS["replicheck_clip_idle_minutes"]  # 0: a CLIP model stays loaded
    remote_thumbnails: bool = DEFAULTS["replicheck_remote_thumbnails"]
    on_copy: str = DEFAULTS["replicheck_on_copy"]
    infotext: bool = DEFAULTS["replicheck_infotext"]
    check_input: bool = DEFAULTS["replicheck_check_input"]
    registries: list[str] = field(default_factory=list)  # empty: the default registry
    allowed_hosts: list[str] = field(default_factory=list)  # host names the API answers besides its own
    mem_enabled: bool = DEFAULTS["replicheck_mem_enabled"]
    mem_steps: int = DEFAULTS["replicheck_mem_steps"]
    mem_threshold: float = DEFAULTS["replicheck_mem_threshold"]
    mem_mitigate: bool = DEFAULTS["replicheck_mem_mitigate"]
    prompt_check: bool = DEFAULTS["replicheck_prompt_check"]
    regions: str = DEFAULTS["replicheck_regions"]
    sign: str = DEFAULTS["replicheck_sign"]  # off, sign (webui/signing.py)
    sign_cert: str = ""
    sign_key: str = ""
    sign_tsa: str = ""
    verify_online: bool = DEFAULTS["replicheck_verify_online"]

    def embedder_options(self, models_dir) -> EmbedderOptions:
        """How the web UI loads an embedder: on the chosen device, from its models folder, never
        downloading (a check runs during generation) and without a progress bar."""
        return EmbedderOptions(device=self.device, models_dir=models_dir, offline=True, progress=False)

    @property
    def dont_save_copies(self) -> bool:
        return self.on_copy == ON_COPY_DONT_SAVE

    @classmethod
    def from_options(cls, get: Callable[[str], Any]) -> "Settings":
        """Build from a getter such as `lambda k: getattr(shared.opts, k)`; bad values fall back to defaults."""

        def value(key):
            try:
                v = get(key)
            except Exception:  # noqa: BLE001 - an option the web UI does not know yet
                v = None
            return DEFAULTS[key] if v is None else v

        def tier(family, name):
            v = value(f"replicheck_{family}_{name}")
            try:
                v = float(v)
            except (TypeError, ValueError):
                v = DEFAULTS[f"replicheck_{family}_{name}"]
            if DEFAULT_TIERS[family].measure == "distance":
                return None if v < 0 else int(v)
            return None if v <= 0 else v

        tiers = {family: Tiers(DEFAULT_TIERS[family].measure, **{
            n: (tier(family, n) if f"replicheck_{family}_{n}" in DEFAULTS else getattr(DEFAULT_TIERS[family], n))
            for n in ("possible", "likely", "duplicate")}) for family in DEFAULT_TIERS}
        packs = value("replicheck_packs")
        if isinstance(packs, str):
            packs = [p.strip() for p in packs.split(",") if p.strip()]
        top_k = _int(value("replicheck_top_k"), DEFAULTS["replicheck_top_k"], 1, 50)
        device = str(value("replicheck_device"))
        return cls(
            enabled=bool(value("replicheck_enabled")),
            packs=[str(p) for p in packs or []],
            top_k=top_k,
            tiers=tiers,
            device=device if device in DEVICES else "cpu",
            keep_loaded=bool(value("replicheck_keep_loaded")),
            clip_idle_minutes=_minutes(value("replicheck_clip_idle_minutes"), DEFAULTS["replicheck_clip_idle_minutes"]),
            remote_thumbnails=bool(value("replicheck_remote_thumbnails")),
            on_copy=str(value("replicheck_on_copy")),
            infotext=bool(value("replicheck_infotext")),
            check_input=bool(value("replicheck_check_input")),
            registries=[u.strip() for u in str(value("replicheck_registries") or "").split(",") if u.strip()],
            allowed_hosts=[h.strip() for h in str(value("replicheck_allowed_hosts") or "").split(",") if h.strip()],
            mem_enabled=bool(value("replicheck_mem_enabled")),
            mem_steps=_int(value("replicheck_mem_steps"), DEFAULTS["replicheck_mem_steps"], 1, 50),
            mem_threshold=_float(value("replicheck_mem_threshold"), DEFAULTS["replicheck_mem_threshold"]),
            mem_mitigate=bool(value("replicheck_mem_mitigate")),
            prompt_check=bool(value("replicheck_prompt_check")),
            regions=setting_mode(value("replicheck_regions")),
            sign="sign" if str(value("replicheck_sign")) == "sign" else "off",
            sign_cert=str(value("replicheck_sign_cert") or "").strip(),
            sign_key=str(value("replicheck_sign_key") or "").strip(),
            sign_tsa=str(value("replicheck_sign_tsa") or "").strip(),
            verify_online=bool(value("replicheck_verify_online")),
        )

    def registry_urls(self) -> list[str]:
        from lib_replicheck.registry.registry import DEFAULT_REGISTRY

        return self.registries or [DEFAULT_REGISTRY]
