"""Where the builder's training images come from, in a fixed order: a folder of images, webdataset
tar shards as img2dataset writes them, or a LAION-style parquet whose images img2dataset downloads.

Every source yields SourceItems: plain data (bytes or a path, and the metadata), so they can travel
to Ray workers. Decoding happens in the embed stage. An exclusion list (URLs, or hashes from the
parquet's `hash` column, or sha256 of the image bytes) drops rows before they are downloaded or
indexed.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from lib_replicheck.builder.fetch import (FETCH_NICENESS, MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, Failed, exit_with_parent,
                                         get as get_image)
from lib_replicheck.errors import ReplicheckError
from lib_replicheck.registry.parse_recipe import MAX_EXCLUDE_BYTES, MAX_EXCLUDE_ENTRIES

log = logging.getLogger("replicheck")

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")


@dataclass
class SourceItem:
    key: str  # stable identity of the row (shard/key, relative path)
    data: bytes | None = None  # the encoded image, or
    path: str | None = None  # a file to read
    url: str | None = None
    caption: str | None = None
    license: str | None = None
    hash: str | None = None  # the parquet's hash column, when there is one
    #: an image already in memory: a callable returning an RGB PIL image or raising ImageError
    #: (packs built by a program from images it holds; such items cannot travel to Ray workers)
    load: Callable[[], object] | None = None

    def open(self):
        """The decoded RGB image as displayed (EXIF orientation applied), through the one decoder
        every image goes through; ImageError naming the row when it cannot be read."""
        from lib_replicheck.images import decode

        if self.load is not None:
            return self.load()
        if self.path is not None:
            return decode(self.path)
        return decode(self.data or b"", name=self.key)


def check_exclusion_list(path: str | Path) -> int:
    """The size of an exclusion list file; ReplicheckError naming it when it cannot be read or is
    larger than MAX_EXCLUDE_BYTES (checked before a byte of it is read)."""
    try:
        size = Path(path).stat().st_size
    except OSError as e:
        raise ReplicheckError(f"exclusion list {path}: {e.strerror or e}") from None
    if size > MAX_EXCLUDE_BYTES:
        raise ReplicheckError(f"exclusion list {path}: {size:,} bytes, more than the {MAX_EXCLUDE_BYTES // 1024**2} "
                              "MB an exclusion list may have")
    return size


class Exclusions:
    """URLs and hashes to drop (Re-LAION's removals, opt-outs): one per line, '#' comments; at most
    MAX_EXCLUDE_BYTES and MAX_EXCLUDE_ENTRIES, refused naming the file before they are exceeded."""

    def __init__(self, path: str | Path | None = None):
        self.values: set[str] = set()
        if path:
            check_exclusion_list(path)
            self.values = _exclusion_values(path)

    def __bool__(self) -> bool:
        return bool(self.values)

    def excludes(self, item: SourceItem) -> bool:
        if not self.values:
            return False
        if item.url in self.values or (item.hash and item.hash in self.values):
            return True
        if item.data is not None:
            return hashlib.sha256(item.data).hexdigest() in self.values
        return False


def _exclusion_values(path: str | Path) -> set[str]:
    """The entries of an exclusion list, read a line at a time and never past the bounds (the file
    may have grown since its size was checked)."""
    values: set[str] = set()
    read = 0
    try:
        with open(path, "rb") as f:
            while line := f.readline(MAX_EXCLUDE_BYTES + 1 - read):
                read += len(line)
                if read > MAX_EXCLUDE_BYTES:
                    raise ReplicheckError(f"exclusion list {path}: more than the {MAX_EXCLUDE_BYTES // 1024**2} MB "
                                          "an exclusion list may have")
                entry = line.decode("utf-8").strip()
                if entry and not entry.startswith("#"):
                    values.add(entry)
                    if len(values) > MAX_EXCLUDE_ENTRIES:
                        raise ReplicheckError(f"exclusion list {path}: more than {MAX_EXCLUDE_ENTRIES:,} entries")
    except OSError as e:
        raise ReplicheckError(f"exclusion list {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ReplicheckError(f"exclusion list {path}: not UTF-8 text (byte {read - len(line) + e.start})") from None
    return values


def folder(path: str | Path, license: str | None = None) -> Iterator[SourceItem]:
    """Images under `path`, keyed by their relative path; a sidecar `name.txt` beside `name.jpg` is
    its caption."""
    from lib_replicheck.images import iter_image_files

    root = Path(path)
    if not root.is_dir():
        raise ReplicheckError(f"{path}: not a folder of images")
    for f in iter_image_files([root]):
        txt = f.with_suffix(".txt")
        caption = None
        if txt.is_file():
            try:
                caption = txt.read_text(encoding="utf-8", errors="replace").strip()[:2000]
            except OSError:
                caption = None  # an unreadable sidecar costs the caption, not the image
        yield SourceItem(key=f.relative_to(root).as_posix(), path=str(f), caption=caption, license=license)


def webdataset(paths: list[Path], license: str | None = None) -> Iterator[SourceItem]:
    """Samples of img2dataset's webdataset shards: KEY.jpg + KEY.txt + KEY.json (url, caption, ...)."""
    for shard in paths:
        try:
            tf = tarfile.open(shard, "r:*")
        except (tarfile.TarError, OSError) as e:
            raise ReplicheckError(f"{shard}: not a readable tar shard ({e})") from None
        bad_sidecars: list[str] = []
        with tf:
            sample_key, sample = None, {}
            try:
                for member in tf:
                    if not member.isfile():
                        continue
                    key, _, ext = member.name.rpartition(".")
                    if key != sample_key:
                        if sample:
                            item = _sample_item(shard, sample_key, sample, license, bad_sidecars)
                            if item is not None:
                                yield item
                        sample_key, sample = key, {}
                    sample[ext.lower()] = tf.extractfile(member).read()
            except (tarfile.TarError, OSError, EOFError) as e:
                raise ReplicheckError(f"{shard}: truncated or corrupt tar shard ({e})") from None
            if sample:
                item = _sample_item(shard, sample_key, sample, license, bad_sidecars)
                if item is not None:
                    yield item
        if len(bad_sidecars) > SIDECAR_WARNINGS:
            log.warning("%s: %d samples in all have an unreadable .json sidecar and keep no url, license or hash",
                        shard, len(bad_sidecars))


#: The column of a recipe's rows that holds the list's own key of a row (kept as the image's source).
SOURCE_KEY = "source_key"
#: Unreadable sidecar JSON files named one by one in the log, per shard; the rest are counted.
SIDECAR_WARNINGS = 5


def _sample_item(shard: Path, key: str, sample: dict, license: str | None,
                 bad_sidecars: list[str] | None = None) -> SourceItem | None:
    image = next((sample[e] for e in IMAGE_EXTS if e in sample), None)
    if image is None:
        return None  # e.g. a stray .json of a failed download
    meta = {}
    if "json" in sample:
        meta, problem = _sidecar(sample["json"])
        if problem:
            name = f"{shard}: {os.path.basename(key)}.json"
            if bad_sidecars is not None:
                bad_sidecars.append(name)
                if len(bad_sidecars) <= SIDECAR_WARNINGS:
                    log.warning("%s: %s; the image is kept without its url, license and hash", name, problem)
    caption = sample["txt"].decode("utf-8", "replace").strip() if "txt" in sample else meta.get("caption")
    url, meta_license = meta.get("url"), meta.get("license")
    if meta_license is None and isinstance(meta.get("LICENSE"), str):
        meta_license = meta["LICENSE"]
    own_key = meta.get(SOURCE_KEY)  # the list's own key of the row (a recipe's `key` column)
    return SourceItem(key=str(own_key)[:200] if isinstance(own_key, (str, int)) and str(own_key)
                      else f"{shard.name}/{os.path.basename(key)}", data=image,
                      url=url if isinstance(url, str) else None,
                      caption=(caption or None) and str(caption)[:2000],
                      license=(meta_license if isinstance(meta_license, str) else None) or license,
                      hash=str(meta["hash"]) if isinstance(meta.get("hash"), (str, int)) else None)


def _sidecar(data: bytes) -> tuple[dict, str | None]:
    """The sample's metadata, or ({}, what is wrong with it)."""
    try:
        meta = json.loads(data)
    except UnicodeDecodeError:
        return {}, "not UTF-8 text"
    except json.JSONDecodeError as e:
        return {}, f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})"
    except RecursionError:
        return {}, "JSON nested too deeply"
    if not isinstance(meta, dict):
        return {}, f"a JSON {type(meta).__name__}, not an object"
    return meta, None


def webdataset_shards(path: str | Path) -> list[Path]:
    p = Path(path)
    shards = sorted(p.glob("*.tar")) if p.is_dir() else [p]
    if not shards:
        raise ReplicheckError(f"{path}: no .tar shards")
    return shards


def parquet_download(parquet: str | Path, work: Path, exclusions: Exclusions, *, processes: int = 2,
                     threads: int = 16, timeout: int = 10, url_col: str = "URL", caption_col: str = "TEXT",
                     log=print) -> Path:
    """Download a LAION-style parquet's images with img2dataset into webdataset shards under `work`;
    rows on the exclusion list are dropped before anything is downloaded. Returns the shard folder."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out = work / "images"
    done = out / ".complete"
    if done.is_file():
        log(f"images already downloaded in {out}")
        return out
    try:
        table = pq.read_table(parquet)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types
        raise ReplicheckError(f"{parquet}: not a readable parquet file ({e})") from None
    for col in (url_col, caption_col):
        if col not in table.column_names:
            raise ReplicheckError(f"{parquet}: no column {col!r} (columns: {', '.join(table.column_names)})")
    if exclusions:
        keep = pc.invert(pc.is_in(table[url_col], value_set=_array(exclusions.values)))
        if "hash" in table.column_names:
            hashes = pc.cast(table["hash"], "string")
            keep = pc.and_(keep, pc.invert(pc.is_in(hashes, value_set=_array(exclusions.values))))
        before = table.num_rows
        table = table.filter(keep)
        log(f"exclusion list: {before - table.num_rows} of {before} rows dropped before downloading")
    work.mkdir(parents=True, exist_ok=True)
    filtered = work / "rows.parquet"
    pq.write_table(table, filtered)
    extra = [c for c in ("hash", "LICENSE", "license", "WIDTH", "HEIGHT") if c in table.column_names]
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # img2dataset imports it: no network at import
    from img2dataset import download

    download(url_list=str(filtered), input_format="parquet", url_col=url_col, caption_col=caption_col,
             output_format="webdataset", output_folder=str(out), processes_count=processes, thread_count=threads,
             resize_mode="no", timeout=timeout, retries=0, enable_wandb=False, number_sample_per_shard=10000,
             save_additional_columns=extra or None, disallowed_header_directives=[], distributor="multiprocessing")
    stats = _img2dataset_stats(out)
    log(f"img2dataset: {stats['ok']} images downloaded, {stats['failed']} rows failed "
        f"({'; '.join(f'{k}: {v}' for k, v in stats['errors'].items()) or 'no errors'})")
    done.write_text(json.dumps(stats))
    return out


def _array(values):
    import pyarrow as pa

    return pa.array(sorted(values), type=pa.string())


def _img2dataset_stats(folder: Path) -> dict:
    ok = failed = 0
    errors: dict[str, int] = {}
    for f in sorted(folder.glob("*_stats.json")):
        s = json.loads(f.read_text())
        ok += int(s.get("successes", 0))
        failed += int(s.get("failed_to_download", 0)) + int(s.get("failed_to_resize", 0))
        for k, v in (s.get("status_dict") or {}).items():
            if k != "success":
                errors[k[:80]] = errors.get(k[:80], 0) + int(v)
    return {"ok": ok, "failed": failed, "errors": errors}


def detect(source: str | Path) -> str:
    """'parquet', 'webdataset' or 'folder', from what `source` is."""
    p = Path(source)
    if p.is_file() and p.suffix == ".parquet":
        return "parquet"
    if (p.is_file() and p.suffix == ".tar") or (p.is_dir() and any(p.glob("*.tar"))):
        return "webdataset"
    if p.is_dir():
        return "folder"
    raise ReplicheckError(f"{source}: not a folder of images, a .tar shard (or folder of them), nor a .parquet file")


# -- a recipe's list: read, normalised, and its images fetched with img2dataset ----------------------

#: The columns of a normalised list (rows.parquet), as img2dataset and `parquet_download` read them.
ROW_COLUMNS = {"url": "URL", "caption": "TEXT", "license": "LICENSE", "hash": "hash", "key": SOURCE_KEY}


class ListError(ReplicheckError):
    """A recipe's list cannot be used; the message names the file and the recipe field."""


#: Bounds on one list file, checked before its rows are held: rows; bytes of text of the columns kept,
#: in all and per parquet row group (from the file's metadata, before reading); and bytes of text per
#: batch of LIST_BATCH_ROWS rows as decoded (a dictionary-encoded value repeated on every row is
#: counted on every row, before it is expanded).
MAX_LIST_ROWS = 20_000_000
MAX_LIST_TEXT_BYTES = 8 * 1024**3
MAX_ROW_GROUP_BYTES = 512 * 1024**2
LIST_BATCH_ROWS = 8192
MAX_BATCH_TEXT_BYTES = 64 * 1024**2


def _roles(path: Path, columns: dict[str, str], names: list[str], where: str,
           optional: tuple[str, ...]) -> dict[str, str]:
    """The recipe's roles whose column the file has; ListError naming the first required one missing."""
    roles = {r: c for r, c in columns.items() if c in names or r not in optional}
    for role, col in roles.items():
        if col not in names:
            raise ListError(f"{path}: no column {col!r}, named by the recipe's {where}.columns.{role} "
                            f"(columns: {', '.join(map(str, names))[:300]})")
    return roles


def csv_rows(path: str | Path, columns: dict[str, str], *, delimiter: str = ",", where: str = "list",
             optional: tuple[str, ...] = ()) -> Iterator[dict[str, str]]:
    """The rows of a CSV list, one at a time, as {ROW_COLUMNS name: value} (empty cells left out);
    rows without a URL are skipped. Python's csv module only: a CSV recipe needs no pyarrow. A cell
    is bounded by the csv module's field size limit, the rows by MAX_LIST_ROWS."""
    import csv

    path = Path(path)
    try:
        f = open(path, encoding="utf-8-sig", newline="")
    except OSError as e:
        raise ListError(f"{path}: cannot be read ({e.strerror or e})") from None
    with f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = next(reader, None)
            if header is None:
                raise ListError(f"{path}: empty, not a CSV list with a header line")
            roles = _roles(path, columns, header, where, optional)
            pos = {ROW_COLUMNS[r]: header.index(c) for r, c in roles.items()}
            for n, fields in enumerate(reader, 1):
                if n > MAX_LIST_ROWS:
                    raise ListError(f"{path}: more than {MAX_LIST_ROWS:,} rows; split it into several lists")
                row = {t: fields[i] for t, i in pos.items() if i < len(fields) and fields[i]}
                if row.get("URL"):
                    yield row
        except csv.Error as e:
            raise ListError(f"{path}: line {reader.line_num}: not a readable CSV list ({e})") from None
        except UnicodeDecodeError as e:
            raise ListError(f"{path}: not UTF-8 text (byte {e.start} of a block near line {reader.line_num})") from None


def parquet_batches(path: str | Path, columns: dict[str, str], *, where: str = "list",
                    optional: tuple[str, ...] = ()):
    """The rows of a parquet list as pyarrow tables of at most LIST_BATCH_ROWS rows, with every
    column of ROW_COLUMNS the recipe names (all strings; an optional column the file lacks is null),
    rows without a URL dropped. The file's metadata is checked against the bounds before any row is
    read, and each batch's text before it is decoded; ListError names the file and the field."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
        md = pf.metadata
    except (OSError, pa.ArrowException) as e:
        raise ListError(f"{path}: not a readable parquet file ({str(e)[:300]})") from None
    roles = _roles(path, columns, schema.names, where, optional)
    for role, col in roles.items():
        t = schema.field(col).type
        if pa.types.is_dictionary(t):
            t = t.value_type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
                or pa.types.is_large_binary(t) or pa.types.is_integer(t) or pa.types.is_floating(t)):
            raise ListError(f"{path}: column {col!r}, named by the recipe's {where}.columns.{role}, holds {t}, "
                            "not text or a number")
    if md.num_rows > MAX_LIST_ROWS:
        raise ListError(f"{path}: {md.num_rows:,} rows, more than the {MAX_LIST_ROWS:,} a list file may have; "
                        "split it into several lists")
    wanted = set(roles.values())
    total = 0
    for r in range(md.num_row_groups):
        rg = md.row_group(r)
        size = sum(rg.column(i).total_uncompressed_size for i in range(rg.num_columns)
                   if rg.column(i).path_in_schema in wanted)
        if size > MAX_ROW_GROUP_BYTES:
            raise ListError(f"{path}: row group {r} holds {size:,} bytes in the columns used, more than the "
                            f"{MAX_ROW_GROUP_BYTES:,} read at a time; write it with smaller row groups")
        total += size
    if total > MAX_LIST_TEXT_BYTES:
        raise ListError(f"{path}: {total:,} bytes in the columns used, more than the {MAX_LIST_TEXT_BYTES:,} a list "
                        "file may hold; split it into several lists")
    text = [c for c in wanted if not (pa.types.is_integer(schema.field(c).type)
                                      or pa.types.is_floating(schema.field(c).type))]
    decoded, start = 0, 0
    try:
        pf = pq.ParquetFile(path, read_dictionary=text)  # repeated values stay one value until counted
        for batch in pf.iter_batches(batch_size=LIST_BATCH_ROWS, columns=sorted(wanted)):
            size = sum(_text_bytes(batch.column(c)) for c in wanted)
            if size > MAX_BATCH_TEXT_BYTES:
                raise ListError(f"{path}: rows {start:,} to {start + batch.num_rows - 1:,} hold {size:,} bytes of "
                                f"text, more than the {MAX_BATCH_TEXT_BYTES:,} allowed for {LIST_BATCH_ROWS:,} rows "
                                "(values far longer than URLs and captions)")
            decoded += size
            if decoded > MAX_LIST_TEXT_BYTES:
                raise ListError(f"{path}: more than {MAX_LIST_TEXT_BYTES:,} bytes of text in the columns used; "
                                "split it into several lists")
            start += batch.num_rows
            yield _normalised(batch, roles, columns)
    except (OSError, pa.ArrowException) as e:
        raise ListError(f"{path}: not a readable parquet file ({str(e)[:300]})") from None


def _text_bytes(arr) -> int:
    """Bytes the column takes once decoded: a dictionary's values counted once per row using them."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(arr.type):
        lengths = pc.binary_length(arr.dictionary) if not (pa.types.is_integer(arr.dictionary.type)
                                                           or pa.types.is_floating(arr.dictionary.type)) \
            else pa.array([8] * len(arr.dictionary), pa.int64())
        return int(pc.sum(pc.take(lengths, arr.indices)).as_py() or 0) + arr.indices.nbytes
    return int(arr.nbytes)


def rows_schema(columns: dict[str, str]):
    """The schema of a recipe's normalised rows: a string column for each role it names."""
    import pyarrow as pa

    return pa.schema([(target, pa.string()) for role, target in ROW_COLUMNS.items() if role in columns])


def _normalised(batch, roles: dict[str, str], columns: dict[str, str]):
    import pyarrow as pa
    import pyarrow.compute as pc

    out = {}
    for role, target in ROW_COLUMNS.items():
        if role not in columns:
            continue
        if role not in roles:
            out[target] = pa.nulls(batch.num_rows, pa.string())
            continue
        arr = batch.column(roles[role])
        if pa.types.is_dictionary(arr.type):
            arr = arr.cast(arr.type.value_type)
        out[target] = arr if pa.types.is_string(arr.type) else arr.cast(pa.string())
    table = pa.table(out, schema=rows_schema(columns))
    return table.filter(pc.invert(pc.is_null(table["URL"])))


def rows_file(work: Path, fmt: str) -> Path:
    """Where a recipe's normalised rows go: JSON lines for a CSV list (read by builder/fetch.py,
    no pyarrow), parquet for a parquet list (read by img2dataset)."""
    return work / ("rows.jsonl" if fmt == "csv" else "rows.parquet")


def collect_rows(paths: list[Path], fmt: str, columns: dict[str, str], out: Path, *, delimiter: str = ",",
                 optional: tuple[str, ...] = (), sample: int | None = None,
                 exclusions: Exclusions | None = None) -> tuple[int, int]:
    """The rows of the list files to fetch, written to `out` one batch at a time through a
    temporary file (a rerun finds them whole or not at all): the first `sample` rows, less those on
    the exclusion list. Returns (rows written, rows excluded)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        if fmt == "csv":
            counts = _collect_csv(paths, columns, tmp, delimiter, optional, sample, exclusions)
        else:
            counts = _collect_parquet(paths, columns, tmp, optional, sample, exclusions)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return counts


def _collect_csv(paths, columns, tmp: Path, delimiter, optional, sample, exclusions) -> tuple[int, int]:
    values = exclusions.values if exclusions else set()
    n = excluded = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for path in paths:
            for row in csv_rows(path, columns, delimiter=delimiter, optional=optional):
                if sample and n + excluded >= sample:
                    return n, excluded
                if row["URL"] in values or row.get("hash") in values:
                    excluded += 1
                    continue
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
    return n, excluded


def _collect_parquet(paths, columns, tmp: Path, optional, sample, exclusions) -> tuple[int, int]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    values = _array(exclusions.values) if exclusions else None
    n = excluded = seen = 0
    with pq.ParquetWriter(tmp, rows_schema(columns)) as writer:
        for path in paths:
            for table in parquet_batches(path, columns, optional=optional):
                if sample:
                    if seen >= sample:
                        return n, excluded
                    table = table.slice(0, sample - seen)
                seen += table.num_rows
                if values is not None:
                    keep = pc.invert(pc.is_in(table["URL"], value_set=values))
                    if "hash" in table.column_names:
                        keep = pc.and_kleene(keep, pc.invert(pc.fill_null(pc.is_in(table["hash"], value_set=values),
                                                                          False)))
                    before = table.num_rows
                    table = table.filter(keep)
                    excluded += before - table.num_rows
                writer.write_table(table)
                n += table.num_rows
    return n, excluded


def count_rows(path: Path, fmt: str, columns: dict[str, str], *, delimiter: str = ",",
               optional: tuple[str, ...] = ()) -> int:
    """Rows of a list file with a URL (a parquet file's from its metadata)."""
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.read_metadata(path).num_rows
        except (OSError, pa.ArrowException) as e:
            raise ListError(f"{path}: not a readable parquet file ({str(e)[:300]})") from None
    return sum(1 for _ in csv_rows(path, columns, delimiter=delimiter, optional=optional))


def img2dataset_stats(folder: Path) -> dict:
    """What img2dataset finished so far: rows done, images fetched, rows failed and why (the stats
    file of each shard it completed)."""
    done = ok = failed = 0
    errors: dict[str, int] = {}
    for f in sorted(Path(folder).glob("*_stats.json")):
        try:
            s = json.loads(f.read_text())
        except (OSError, ValueError):
            continue  # being written: counted at the next look
        done += int(s.get("count", 0))
        ok += int(s.get("successes", 0))
        failed += int(s.get("failed_to_download", 0)) + int(s.get("failed_to_resize", 0))
        for k, v in (s.get("status_dict") or {}).items():
            if k != "success":
                why = failure_reason(k)
                errors[why] = errors.get(why, 0) + int(v)
    return {"done": done, "ok": ok, "failed": failed, "errors": errors}


def failure_reason(message: str) -> str:
    """img2dataset's error for a row, in a few words (OpenCV's pixel bound is a multi-line assertion)."""
    if "imgcodecs" in message and ("-215" in message or "validateInputImageSize" in message):
        return f"more than {MAX_IMAGE_PIXELS // 1_000_000} megapixels"
    if message.startswith("Image decoding error"):
        return "not an image"
    return " ".join(message.split())[:80]


def fetch_command(rows: Path, out: Path, *, processes: int, threads: int, timeout: int, image_size: int,
                  shard_rows: int) -> list[str]:
    """The command that fetches `rows`' images into webdataset shards under `out` (img2dataset in a
    process of its own: it can be killed to cancel, and it never holds the caller's interpreter)."""
    import sys

    config = {"rows": str(rows), "out": str(out), "processes": processes, "threads": threads, "timeout": timeout,
              "image_size": image_size, "shard_rows": shard_rows}
    return [sys.executable, "-m", "lib_replicheck.builder.sources", "fetch", json.dumps(config)]


def _bounded_download(row, timeout, user_agent_token, disallowed_header_directives):
    """img2dataset's download_image with replicheck's bounds (builder.fetch.get): http(s) only, at
    most MAX_IMAGE_BYTES, and the whole request, headers included, within fetch.LIMIT_FACTOR x
    `timeout` (a server trickling a byte now and then cannot hold a thread)."""
    key, url = row
    try:
        return key, io.BytesIO(get_image(url, timeout=timeout, max_bytes=MAX_IMAGE_BYTES)), None
    except Failed as e:
        return key, None, str(e)


def _bound_img2dataset() -> None:
    """Put the bounds into img2dataset in this process: its downloads go through _bounded_download,
    and OpenCV refuses to decode images over MAX_IMAGE_PIXELS (a decompression bomb fails)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # img2dataset imports it: no network at import
    os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(MAX_IMAGE_PIXELS)
    import img2dataset.downloader as dl

    dl.download_image = _bounded_download




def _fetch_main(config: dict) -> None:
    exit_with_parent()
    if hasattr(os, "nice"):
        os.nice(FETCH_NICENESS)  # inherited by img2dataset's worker processes
    _bound_img2dataset()
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


def _extra_columns(rows: str) -> list[str] | None:
    import pyarrow.parquet as pq

    names = pq.read_schema(rows).names
    return [c for c in ("LICENSE", "hash", SOURCE_KEY) if c in names] or None


__all__ = ["SourceItem", "Exclusions", "folder", "webdataset", "webdataset_shards", "parquet_download", "detect"]


if __name__ == "__mp_main__":  # img2dataset's worker processes (spawned) import the main module as this
    _bound_img2dataset()

if __name__ == "__main__":  # `python -m lib_replicheck.builder.sources fetch CONFIG`: see fetch_command
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "fetch":
        sys.exit("usage: python -m lib_replicheck.builder.sources fetch CONFIG_JSON")
    _fetch_main(json.loads(sys.argv[2]))
