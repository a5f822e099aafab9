"""A list of images to fetch (a recipe's list files, or the parquet given to `build`), read and
normalised into rows: the columns img2dataset and fetch_http.py read (ROW_COLUMNS), the first N
rows of a sample, less those on an exclusion list. CSV lists are read with Python's csv module (no
pyarrow); parquet lists a batch at a time, every bound checked before the rows are held.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from lib_replicheck.builder.sources import SOURCE_KEY, Exclusions
from lib_replicheck.errors import ReplicheckError

#: The columns of a normalised list (rows.parquet), as img2dataset and fetch_http.py read them.
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


def _roles(path: Path, columns: dict[str, str], names: list[str], where: str | None,
           optional: tuple[str, ...]) -> dict[str, str]:
    """The recipe's roles whose column the file has; ListError naming the first required one missing
    (and the recipe's field that names it; `where` None: a list given to `build`, no recipe)."""
    roles = {r: c for r, c in columns.items() if c in names or r not in optional}
    for role, col in roles.items():
        if col not in names:
            field_ = f", named by the recipe's {where}.columns.{role}" if where else ""
            raise ListError(f"{path}: no column {col!r}{field_} "
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


def parquet_batches(path: str | Path, columns: dict[str, str], *, where: str | None = "list",
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
            field_ = f", named by the recipe's {where}.columns.{role}," if where else ""
            raise ListError(f"{path}: column {col!r}{field_} holds {t}, "
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
                 exclusions: Exclusions | None = None, where: str | None = "list") -> tuple[int, int]:
    """The rows of the list files to fetch, written to `out` one batch at a time through a
    temporary file (a rerun finds them whole or not at all): the first `sample` rows, less those on
    the exclusion list. Returns (rows written, rows excluded)."""
    from lib_replicheck.atomic import replacing

    with replacing(out) as tmp:
        if fmt == "csv":
            return _collect_csv(paths, columns, tmp, delimiter, optional, sample, exclusions)
        return _collect_parquet(paths, columns, tmp, optional, sample, exclusions, where)


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


def _collect_parquet(paths, columns, tmp: Path, optional, sample, exclusions, where) -> tuple[int, int]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    values = _array(exclusions.values) if exclusions else None
    n = excluded = seen = 0
    with pq.ParquetWriter(tmp, rows_schema(columns)) as writer:
        for path in paths:
            for table in parquet_batches(path, columns, optional=optional, where=where):
                if sample:
                    if seen >= sample:
                        return n, excluded
                    table = table.slice(0, sample - seen)
                seen += table.num_rows
                if values is not None:
                    before = table.num_rows
                    table = _without_excluded(table, values)
                    excluded += before - table.num_rows
                writer.write_table(table)
                n += table.num_rows
    return n, excluded


def _without_excluded(table, values):
    """The rows of `table` whose URL and hash are not among `values` (a pyarrow string array)."""
    import pyarrow.compute as pc

    keep = pc.invert(pc.is_in(table["URL"], value_set=values))
    if "hash" in table.column_names:
        keep = pc.and_kleene(keep, pc.invert(pc.fill_null(pc.is_in(table["hash"], value_set=values), False)))
    return table.filter(keep)


def collect_outside(paths: list[Path], fmt: str, columns: dict[str, str], out: Path, *, skip: int, limit: int,
                    seed: str, delimiter: str = ",", optional: tuple[str, ...] = (),
                    exclusions: Exclusions | None = None, where: str | None = "list") -> int:
    """A random sample (seeded by `seed`, so a rerun draws the same) of at most `limit` rows of the
    list files past their first `skip` (the rows a sample left out of the pack), less those on the
    exclusion list, written to `out` as collect_rows writes. Two passes over the files: one counts
    the rows, the other keeps the drawn ones; nothing but the drawn positions is held. Returns the
    rows written."""
    import random

    from lib_replicheck.atomic import replacing

    def outside():
        """(position among the rows past `skip`, row dict or pyarrow table of consecutive rows)."""
        seen = kept = 0
        values = (exclusions.values if fmt == "csv" else _array(exclusions.values)) if exclusions else None
        for path in paths:
            batches = csv_rows(path, columns, delimiter=delimiter, optional=optional) if fmt == "csv" else \
                parquet_batches(path, columns, optional=optional, where=where)
            for batch in batches:
                start = seen
                seen += 1 if fmt == "csv" else batch.num_rows
                if seen <= skip:
                    continue
                if fmt == "csv":
                    if values and (batch["URL"] in values or batch.get("hash") in values):
                        continue
                    yield kept, batch
                    kept += 1
                    continue
                batch = batch.slice(max(0, skip - start))
                if values is not None:
                    batch = _without_excluded(batch, values)
                yield kept, batch
                kept += batch.num_rows

    total = 0
    for pos, batch in outside():
        total = pos + (1 if fmt == "csv" else batch.num_rows)
    drawn = sorted(random.Random(seed).sample(range(total), min(max(0, limit), total)))
    chosen = set(drawn)
    with replacing(out) as tmp:
        if fmt == "csv":
            with open(tmp, "w", encoding="utf-8") as f:
                for pos, row in outside():
                    if pos in chosen:
                        f.write(json.dumps(row, ensure_ascii=False) + "\n")
            return len(drawn)
        import bisect

        import pyarrow as pa
        import pyarrow.parquet as pq

        with pq.ParquetWriter(tmp, rows_schema(columns)) as writer:
            for pos, table in outside():
                lo, hi = bisect.bisect_left(drawn, pos), bisect.bisect_left(drawn, pos + table.num_rows)
                if hi > lo:
                    writer.write_table(table.take(pa.array([d - pos for d in drawn[lo:hi]], pa.int64())))
    return len(drawn)


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


def _array(values):
    import pyarrow as pa

    return pa.array(sorted(values), type=pa.string())
