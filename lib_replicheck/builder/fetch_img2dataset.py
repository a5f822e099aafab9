"""img2dataset (a parquet list's fetcher) with replicheck's bounds, in the process builder/fetch.py
starts: its downloads go through fetch_http.get (http(s) only, at most MAX_IMAGE_BYTES, a wall-clock
limit per request) and OpenCV refuses images over MAX_IMAGE_PIXELS before decoding them.
"""

from __future__ import annotations

import io
import os

from lib_replicheck.builder.fetch_http import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, Failed, get as get_image
from lib_replicheck.builder.sources import SOURCE_KEY


def _bounded_download(row, timeout, user_agent_token, disallowed_header_directives):
    """img2dataset's download_image with replicheck's bounds (fetch_http.get): http(s) only, at
    most MAX_IMAGE_BYTES, and the whole request, headers included, within fetch_http.LIMIT_FACTOR x
    `timeout` (a server trickling a byte now and then cannot hold a thread)."""
    key, url = row
    try:
        return key, io.BytesIO(get_image(url, timeout=timeout, max_bytes=MAX_IMAGE_BYTES)), None
    except Failed as e:
        return key, None, str(e)


def bound_img2dataset() -> None:
    """Put the bounds into img2dataset in this process: its downloads go through _bounded_download,
    and OpenCV refuses to decode images over MAX_IMAGE_PIXELS (a decompression bomb fails)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # img2dataset imports it: no network at import
    os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(MAX_IMAGE_PIXELS)
    import img2dataset.downloader as dl

    dl.download_image = _bounded_download


def fetch_rows(config: dict) -> int:
    """img2dataset over the rows file `config["rows"]` (fetch.command's config), bounded; 0 when it ends.
    `image_size` 0 keeps each image as it came."""
    bound_img2dataset()
    from img2dataset import download

    size = int(config["image_size"])
    download(url_list=config["rows"], input_format="parquet", url_col="URL", caption_col="TEXT",
             output_format="webdataset", output_folder=config["out"], processes_count=int(config["processes"]),
             thread_count=int(config["threads"]), image_size=size or 256, resize_mode="keep_ratio" if size else "no",
             resize_only_if_bigger=True, timeout=int(config["timeout"]), retries=0, enable_wandb=False,
             number_sample_per_shard=int(config["shard_rows"]), incremental_mode="incremental",
             save_additional_columns=_extra_columns(config["rows"]), max_image_area=MAX_IMAGE_PIXELS,
             disallowed_header_directives=[],
             distributor="multiprocessing")
    return 0


def _extra_columns(rows: str) -> list[str] | None:
    import pyarrow.parquet as pq

    names = pq.read_schema(rows).names
    return [c for c in ("LICENSE", "hash", SOURCE_KEY) if c in names] or None
