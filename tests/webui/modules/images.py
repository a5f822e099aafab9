"""modules/images.py (1.10.1): save_image with its callbacks, and image_grid."""

import os

from PIL import Image, PngImagePlugin

from modules import script_callbacks, shared

saved: list[str] = []


def image_grid(imgs, batch_size=1, rows=None):
    cols = max(1, min(len(imgs), batch_size))
    rows = (len(imgs) + cols - 1) // cols
    w, h = imgs[0].size
    grid = Image.new("RGB", size=(cols * w, rows * h), color="black")
    for i, img in enumerate(imgs):
        grid.paste(img, box=(i % cols * w, i // cols * h))
    return grid


def save_image(image, path, basename, seed=None, prompt=None, extension='png', info=None, short_filename=False,
               no_prompt=False, grid=False, pnginfo_section_name='parameters', p=None, existing_info=None,
               forced_filename=None, suffix="", save_to_dirs=None):
    os.makedirs(path, exist_ok=True)
    index = len([f for f in os.listdir(path) if f.endswith("." + extension)])
    name = f"{index:05}-{'grid' if grid else seed}{suffix}"
    fullfn = os.path.join(path, f"{name}.{extension}")
    params = script_callbacks.ImageSaveParams(image, p, fullfn, {pnginfo_section_name: info} if info else {})
    script_callbacks.before_image_saved_callback(params)
    image, fullfn = params.image, params.filename
    pnginfo = PngImagePlugin.PngInfo()
    for k, v in params.pnginfo.items():
        pnginfo.add_text(k, str(v))
    image.save(fullfn + ".tmp", format="PNG", pnginfo=pnginfo)
    os.replace(fullfn + ".tmp", fullfn)
    txt_fullfn = None
    if getattr(shared.opts, "save_txt", False) and info is not None:
        txt_fullfn = os.path.splitext(fullfn)[0] + ".txt"
        with open(txt_fullfn, "w", encoding="utf8") as file:
            file.write(f"{info}\n")
    script_callbacks.image_saved_callback(params)
    saved.append(fullfn)
    return fullfn, txt_fullfn
