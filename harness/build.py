"""The one-time preparation: read a source's documents, train the tokenizer, tokenize both splits, fit
the evaluation set and write the manifest last (no manifest, no cache). The notebook calls `prepare`
with keywords; `uv run prepare.py ...` is `main`."""
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from harness.manifest import (MANIFEST_FORMAT, PROFILES, CacheError, cache_differences, cache_dir, combined_hash,
                              constants_asked, file_sha256, load_manifest)
from harness.packing import validation_capacity
from harness.sources import SOURCES, climbmix_base_url, collect_documents, python_roots
from harness.tokenizer import SPECIAL_TOKENS, Tokenizer, train_tokenizer

DEFAULT_NUM_SHARDS = {"h100": 10, "small": 4, "tiny": 1}  # climbmix training shards per profile
# what prepare does, in order: `on_phase` hears each as it begins (the prepare notebook's progress bar)
PHASES = ("reading the documents", "training the tokenizer", "tokenizing both splits",
          "fitting the evaluation set and hashing the files")


def tokenize_split(tokenizer, docs, path_bin, path_offsets, dtype, desc):
    """Tokenize documents (BOS first) into one flat token file plus document offsets."""
    from itertools import chain
    from tqdm import tqdm
    lengths, chunk = [], 2048
    with open(path_bin, "wb") as out:
        for i in tqdm(range(0, len(docs), chunk), desc=desc, unit="chunk"):
            ids = tokenizer.encode(docs[i:i + chunk], prepend=tokenizer.get_bos_token_id(),
                                   num_threads=os.cpu_count() or 1)
            sizes = [len(d) for d in ids]
            np.fromiter(chain.from_iterable(ids), dtype=dtype, count=sum(sizes)).tofile(out)
            lengths += sizes
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    np.save(path_offsets, offsets)
    return int(offsets[-1])


def source_spec(source, path=None, include_site_packages=False, num_shards=None, max_chars=None):
    """What the manifest records of the source: enough to tell whether a cache is the one asked for."""
    spec = {"name": source}
    if source == "python":
        spec.update(roots=python_roots(include_site_packages), include_site_packages=include_site_packages,
                    python=sys.version.split()[0])
    elif source == "files":
        spec.update(path=str(Path(path).expanduser().resolve()))
    else:
        spec.update(num_shards=num_shards, base_url=climbmix_base_url())
    if max_chars:
        spec["max_chars"] = max_chars
    return spec


def fit_eval_tokens(tokenizer, data_dir, dtype, constants, overrides, profile):
    """The profile's EVAL_TOKENS, lowered to what the validation split holds when it holds less (the
    offline sources with the small and h100 profiles). An --eval-tokens given is never lowered: a
    clear error instead. Returns {"EVAL_TOKENS": asked} when lowered, else {}."""
    T, asked = constants["max_seq_len"], constants["eval_tokens"]
    tokens = np.memmap(data_dir / "val.bin", dtype=dtype, mode="r")  # only the rows asked for are read
    offsets = np.load(data_dir / "val_offsets.npy")
    rows = validation_capacity(tokens, offsets, tokenizer.get_bos_token_id(), T, asked // T)
    if rows * T == asked:
        return {}
    if rows == 0:
        raise CacheError(f"the validation split holds less than one evaluation row of {T:,} tokens: add more "
                         f"text, or prepare with a smaller --max-seq-len")
    if "eval_tokens" in overrides:
        raise CacheError(f"--eval-tokens {asked:,} is more than the validation split holds ({rows:,} rows of {T:,}): "
                         f"prepare again with --eval-tokens {rows * T} or less, or a bigger corpus")
    constants["eval_tokens"] = rows * T
    print(f"evaluation: EVAL_TOKENS lowered from the {profile} profile's {asked:,} to {rows * T:,} ({rows:,} rows "
          f"of {T:,}), all the validation split holds; a bigger corpus or --eval-tokens N changes it")
    return {"EVAL_TOKENS": asked}


def prepare(*, profile="tiny", source="python", path=None, include_site_packages=False, num_shards=None,
            max_chars=None, time_budget=None, max_seq_len=None, vocab_size=None, eval_tokens=None, cache=None,
            force=False, on_phase=None):
    """Build (or confirm) the cache for one profile and source; returns its manifest. The constants
    given (time_budget, max_seq_len, vocab_size, eval_tokens) override the profile's. A cache already
    there is kept when it is the one asked for, replaced only with force=True; CacheError otherwise.
    on_phase(name) is called as each of PHASES begins (not at all for a cache already there)."""
    phase = on_phase or (lambda name: None)
    if profile not in PROFILES:
        raise CacheError(f"no profile {profile!r}: pick one of {', '.join(sorted(PROFILES))}")
    if source not in SOURCES:
        raise CacheError(f"no source {source!r}: pick one of {', '.join(SOURCES)}")
    directory = cache_dir(cache)
    constants = dict(PROFILES[profile])
    given = dict(time_budget=time_budget, max_seq_len=max_seq_len, vocab_size=vocab_size, eval_tokens=eval_tokens)
    overrides = {k: v for k, v in given.items() if v is not None}
    constants.update(overrides)
    if constants["vocab_size"] <= 256 + len(SPECIAL_TOKENS) or constants["vocab_size"] > 2**32:
        raise CacheError(f"--vocab-size must be above {256 + len(SPECIAL_TOKENS)} (the byte tokens and special tokens)")
    if constants["eval_tokens"] <= 0 or constants["eval_tokens"] % constants["max_seq_len"]:
        raise CacheError(f"--eval-tokens must be a positive multiple of the sequence length ({constants['max_seq_len']})")
    if source == "files" and not path:
        raise CacheError("--source files needs --path DIR_OR_GLOB")
    if source == "climbmix" and num_shards is None:
        num_shards = DEFAULT_NUM_SHARDS[profile]
    wanted = dict(profile=profile, constants={k.upper(): v for k, v in constants.items()},
                  source=source_spec(source, path, include_site_packages, num_shards, max_chars))

    manifest_path = directory / "manifest.json"
    if manifest_path.exists() and not force:
        try:
            existing = load_manifest(directory)
        except CacheError:
            existing = None
        if existing is None:
            raise CacheError(f"the cache in {directory} is broken: re-run with --force to rebuild it")
        same = (existing.get("profile") == wanted["profile"] and existing.get("source") == wanted["source"]
                and wanted["constants"] in (existing.get("constants"), constants_asked(existing)))
        if same:
            print(f"already prepared: {directory} ({profile}, {source}); nothing to do")
            return existing
        raise CacheError(f"{directory} already holds another cache ({cache_differences(existing, wanted)}): set "
                         f"AUTORESEARCH_CACHE to another folder, or pass --force to replace it")

    t0 = time.time()
    if directory.exists() and not directory.is_dir():
        raise CacheError(f"{directory} is a file, not a folder: move it away, or set AUTORESEARCH_CACHE to a folder")
    directory.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)  # the manifest is written last: no manifest, no cache
    phase(PHASES[0])
    splits, chars, duplicates, near_copies = collect_documents(
        source, directory, path=path, include_site_packages=include_site_packages, num_shards=num_shards,
        max_chars=max_chars)
    notes = [f"{duplicates:,} exact duplicates left out"] * bool(duplicates) \
        + [f"{near_copies:,} near-copies kept in the split of the file they resemble"] * bool(near_copies)
    print(f"documents: {len(splits['train']):,} train, {len(splits['val']):,} val, {chars / 1e6:.1f} M characters"
          + (f" ({'; '.join(notes)})" if notes else ""))

    phase(PHASES[1])
    t1 = time.time()
    tok_dir = directory / "tokenizer"
    tok_chars = int(2e9)

    def tokenizer_texts():
        seen = 0
        for text in splits["train"]:
            yield text[:10000]
            seen += min(len(text), 10000)
            if seen > tok_chars:
                return

    train_tokenizer(tokenizer_texts(), constants["vocab_size"], tok_dir)
    tokenizer = Tokenizer.from_directory(tok_dir)
    print(f"tokenizer: vocab {tokenizer.get_vocab_size():,} trained in {time.time() - t1:.1f}s")

    phase(PHASES[2])
    t2 = time.time()
    data_dir = directory / "data"
    data_dir.mkdir(exist_ok=True)
    dtype = np.uint16 if tokenizer.get_vocab_size() <= 2**16 else np.uint32
    counts = {split: tokenize_split(tokenizer, docs, data_dir / f"{split}.bin", data_dir / f"{split}_offsets.npy",
                                    dtype, f"tokenize {split}") for split, docs in splits.items()}
    print(f"tokens: {counts['train']:,} train, {counts['val']:,} val, tokenized in {time.time() - t2:.1f}s")
    phase(PHASES[3])
    # the fixed evaluation set must fit in the validation split: checked now, not at the first run
    lowered = fit_eval_tokens(tokenizer, data_dir, dtype, constants, overrides, profile)

    files = {}
    for path in sorted([*tok_dir.iterdir(), *data_dir.iterdir()]):
        rel = str(path.relative_to(directory))
        files[rel] = dict(bytes=path.stat().st_size, sha256=file_sha256(path))
    tokenizer_hash = combined_hash(files[k]["sha256"] for k in sorted(files) if k.startswith("tokenizer/"))
    data_hash = combined_hash([tokenizer_hash] + [files[k]["sha256"] for k in sorted(files) if k.startswith("data/")])
    wanted["constants"] = {k.upper(): v for k, v in constants.items()}  # as fitted
    manifest = dict(format=MANIFEST_FORMAT, **wanted, lowered=lowered, overrides=overrides,
                    token_dtype=np.dtype(dtype).name,
                    documents={k: len(v) for k, v in splits.items()}, duplicates=duplicates,
                    near_copies=near_copies, tokens=counts, characters=chars, files=files,
                    tokenizer_hash=tokenizer_hash, data_hash=data_hash,
                    created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), prepare_seconds=round(time.time() - t0, 1))
    tmp = manifest_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, manifest_path)
    print(f"prepared {directory} in {time.time() - t0:.1f}s (profile {profile}, data {data_hash[:12]})")
    return manifest


def build_parser():
    import argparse
    p = argparse.ArgumentParser(description="Prepare data and tokenizer for autoresearch (run once).")
    p.add_argument("--source", choices=SOURCES, default="python",
                   help="python: this machine's Python source (offline); climbmix: web text over HTTP; "
                        "files: your own corpus (--path)")
    p.add_argument("--profile", choices=sorted(PROFILES), default="tiny",
                   help="h100: one big GPU; small: consumer GPU / Apple silicon; tiny: CPU, workshops, CI")
    p.add_argument("--path", help="with --source files: a folder or glob of .txt/.md/.jsonl/.parquet files")
    p.add_argument("--include-site-packages", action="store_true", help="with --source python: add site-packages")
    p.add_argument("--num-shards", type=int, help="with --source climbmix: training shards to download")
    p.add_argument("--max-chars", type=int, help="stop reading the source after this many characters")
    p.add_argument("--time-budget", type=int, help="override the profile's training budget (seconds)")
    p.add_argument("--max-seq-len", type=int, help="override the profile's sequence length")
    p.add_argument("--vocab-size", type=int, help="override the profile's vocabulary size")
    p.add_argument("--eval-tokens", type=int, help="override the profile's count of validation tokens")
    p.add_argument("--cache", help="cache folder (default: AUTORESEARCH_CACHE or ~/.cache/autoresearch)")
    p.add_argument("--force", action="store_true", help="rebuild even if the folder holds another cache")
    return p


def main(argv=None):
    """`uv run prepare.py ...`: exit 0 when the cache is ready, 2 with a one-line error when it is not."""
    try:
        prepare(**vars(build_parser().parse_args(argv)))
    except CacheError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
