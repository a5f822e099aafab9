"""modules/api/api.py (1.10.1): the /sdapi/v1 routes replicheck meets, with the real --api-auth handling,
and the real encode_pil_to_base64 (copied from 1.10.1), which the routes call through the module's
name as the real ones do (`map(encode_pil_to_base64, processed.images)`).

txt2img/img2img take the real request fields that matter here (save_images defaults to False,
alwayson_scripts args by lowercased script title) and answer images, parameters and info.
"""

import base64
import io
import json
from secrets import compare_digest

from fastapi import Depends, FastAPI, HTTPException
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from PIL import Image, PngImagePlugin

from modules import processing, shared
from modules.shared import opts

try:  # the web UI always has piexif (its requirements); only encode_pil_to_base64's JPEG/WebP branch uses it
    import piexif
    import piexif.helper
except ImportError:
    piexif = None


def encode_pil_to_base64(image):
    with io.BytesIO() as output_bytes:
        if isinstance(image, str):
            return image
        if opts.samples_format.lower() == 'png':
            use_metadata = False
            metadata = PngImagePlugin.PngInfo()
            for key, value in image.info.items():
                if isinstance(key, str) and isinstance(value, str):
                    metadata.add_text(key, value)
                    use_metadata = True
            image.save(output_bytes, format="PNG", pnginfo=(metadata if use_metadata else None), quality=opts.jpeg_quality)

        elif opts.samples_format.lower() in ("jpg", "jpeg", "webp"):
            if image.mode in ("RGBA", "P"):
                image = image.convert("RGB")
            parameters = image.info.get('parameters', None)
            exif_bytes = piexif.dump({
                "Exif": { piexif.ExifIFD.UserComment: piexif.helper.UserComment.dump(parameters or "", encoding="unicode") }
            })
            if opts.samples_format.lower() in ("jpg", "jpeg"):
                image.save(output_bytes, format="JPEG", exif = exif_bytes, quality=opts.jpeg_quality)
            else:
                image.save(output_bytes, format="WEBP", exif = exif_bytes, quality=opts.jpeg_quality)

        else:
            raise HTTPException(status_code=500, detail="Invalid image format")

        bytes_data = output_bytes.getvalue()

    return base64.b64encode(bytes_data)


def decode_base64_to_image(encoding):
    if encoding.startswith("data:image/"):
        encoding = encoding.split(";")[1].split(",")[1]
    return Image.open(io.BytesIO(base64.b64decode(encoding)))


class Api:
    def __init__(self, app: FastAPI, runners: dict, default_args: dict, outdir: str):
        if shared.cmd_opts.api_auth:
            self.credentials = {}
            for auth in shared.cmd_opts.api_auth.split(","):
                user, password = auth.split(":")
                self.credentials[user] = password
        self.app = app
        self.runners = runners  # "txt2img"/"img2img" -> ScriptRunner
        self.default_args = default_args  # script title -> default args (the UI components' values)
        self.outdir = outdir
        self.add_api_route("/sdapi/v1/txt2img", self.text2imgapi, methods=["POST"])
        self.add_api_route("/sdapi/v1/img2img", self.img2imgapi, methods=["POST"])

    def add_api_route(self, path: str, endpoint, **kwargs):
        if shared.cmd_opts.api_auth:
            return self.app.add_api_route(path, endpoint, dependencies=[Depends(self.auth)], **kwargs)
        return self.app.add_api_route(path, endpoint, **kwargs)

    def auth(self, credentials: HTTPBasicCredentials = Depends(HTTPBasic())):
        if credentials.username in self.credentials:
            if compare_digest(credentials.password, self.credentials[credentials.username]):
                return True
        raise HTTPException(status_code=401, detail="Incorrect username or password",
                            headers={"WWW-Authenticate": "Basic"})

    def _script_args(self, tab, alwayson_scripts):
        runner = self.runners[tab]
        args = [None] * max([s.args_to for s in runner.alwayson_scripts], default=1)
        for s in runner.alwayson_scripts:
            args[s.args_from:s.args_to] = self.default_args[s.title().lower()]
            given = (alwayson_scripts or {}).get(s.title().lower())
            if given and "args" in given:
                for i, v in enumerate(given["args"][: s.args_to - s.args_from]):
                    args[s.args_from + i] = v
        return args

    def _run(self, p, tab):
        from modules.call_queue import queue_lock

        p.scripts = self.runners[tab]
        with queue_lock:
            try:
                shared.state.begin(job=f"scripts_{tab}")
                processed = processing.process_images(p)
            finally:
                shared.state.end()
        b64images = list(map(encode_pil_to_base64, processed.images))
        # the response model's List[str] field turns the bytes into text
        images = [b.decode() if isinstance(b, bytes) else b for b in b64images]
        return {"images": images, "parameters": {}, "info": processed.js()}

    def text2imgapi(self, txt2imgreq: dict):
        r = dict(txt2imgreq)
        p = processing.StableDiffusionProcessingTxt2Img(
            prompt=r.get("prompt", ""), seed=r.get("seed", -1), batch_size=r.get("batch_size", 1),
            width=r.get("width", 512), height=r.get("height", 512),
            n_iter=r.get("n_iter", 1), enable_hr=r.get("enable_hr", False), outpath_samples=self.outdir,
            outpath_grids=self.outdir + "-grids", do_not_save_samples=not r.get("save_images", False),
            do_not_save_grid=not r.get("save_images", False))
        p.script_args = self._script_args("txt2img", r.get("alwayson_scripts"))
        return self._run(p, "txt2img")

    def img2imgapi(self, img2imgreq: dict):
        r = dict(img2imgreq)
        init = [decode_base64_to_image(x).convert("RGB") for x in r.get("init_images", [])]
        mask = decode_base64_to_image(r["mask"]) if r.get("mask") else None
        p = processing.StableDiffusionProcessingImg2Img(
            prompt=r.get("prompt", ""), seed=r.get("seed", -1), batch_size=r.get("batch_size", 1),
            width=r.get("width", 512), height=r.get("height", 512), denoising_strength=r.get("denoising_strength", 0.75),
            n_iter=r.get("n_iter", 1), init_images=init, mask=mask, mask_blur=r.get("mask_blur", 4),
            inpainting_fill=r.get("inpainting_fill", 0), inpaint_full_res=r.get("inpaint_full_res", False),
            outpath_samples=self.outdir,
            outpath_grids=self.outdir + "-grids", do_not_save_samples=not r.get("save_images", False),
            do_not_save_grid=not r.get("save_images", False))
        p.script_args = self._script_args("img2img", r.get("alwayson_scripts"))
        return self._run(p, "img2img")


def parse_info(info: str) -> dict:
    return json.loads(info)
