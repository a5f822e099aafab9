"""The pack builder, the one writer of packs: sources -> embed (shards on disk) -> index -> pack.

- `options.py`: what a build is asked for (BuildOptions, a recipe's GetOptions) and reports; the crop
  variants and thumbnail size
- `sources.py`: the readers: a folder or webdataset shards as SourceItems; exclusion lists
- `fetch.py`: a list's images fetched into webdataset shards, in a bounded process of its own
  (`fetch_lists.py` reads and normalises the list, `fetch_http.py` fetches a CSV list's rows,
  `fetch_img2dataset.py` runs img2dataset with the same bounds for a parquet's)
- `embed.py`: the embed stage (threads or Ray Data), into `shards.py`'s shard store
- `work.py`: the work folder's fingerprint, so a resumed build reuses only its own shards
- `planning.py` (which index, by count and budgets), `index_factory.py` (make, train it), `tuning.py`
  (its search settings) and `stages.py`: index, metadata, publish
- `runner.py`: the stages composed once (work folder, fill, background, index, publish)
- `pipeline.py`: `build` (a source on disk, resumable) and `build_from_items` (images a program holds)
- `build_recipe.py`: a registry recipe built into a pack (`recipe_list.py` its list, `recipe_stage.py`
  what its stages share)
"""
