"""The pack builder, the one writer of packs: sources -> embed (shards on disk) -> index -> pack.

- `options.py`: what a build is asked for and reports; the crop variants and thumbnail size
- `sources.py`: folder, webdataset or parquet rows as SourceItems; exclusion lists
- `embed.py`: the embed stage (threads or Ray Data), into `shards.py`'s shard store
- `work.py`: the work folder's fingerprint, so a resumed build reuses only its own shards
- `planning.py` (which index, by count and budgets), `index_factory.py` (make, train it), `tuning.py`
  (its search settings) and `stages.py`: index, metadata, publish
- `pipeline.py`: `build` (a source on disk, resumable) and `build_from_items` (images a program holds)
"""
