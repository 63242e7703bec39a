"""Where documents come from, and which split each one is in. A source yields (group, text): the group
decides the split (a stable hash of it, or "train"/"val" for climbmix's pinned shards), so that every
document of one file, and every near-copy of it, lands on the same side."""
import hashlib
import json
import os
import time
from pathlib import Path

from harness.manifest import CacheError

SOURCES = ("python", "climbmix", "files")
DOC_MAX_CHARS = 8000  # long files are split into documents of at most this many characters
VAL_PERCENT = 5  # share of documents pinned to the validation split (python and files sources)
NEAR_COPY_SHARE = 0.5  # a file with at least this share of its lines in another file keeps that one's split
CLIMBMIX_REPO = "datasets/karpathy/climbmix-400b-shuffle/resolve/main"
CLIMBMIX_VAL_SHARD = 6542  # the last shard, pinned for validation


def split_text(text, max_chars=DOC_MAX_CHARS):
    """Split text into documents of at most max_chars, at line ends where possible."""
    docs, current, size = [], [], 0
    for line in text.splitlines(keepends=True):
        while len(line) > max_chars:  # a single enormous line: hard split
            if current:
                docs.append("".join(current))
                current, size = [], 0
            docs.append(line[:max_chars])
            line = line[max_chars:]
        if size + len(line) > max_chars and current:
            docs.append("".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line)
    if current:
        docs.append("".join(current))
    return [d for d in docs if d.strip()]


def is_val(group):
    """Pinned validation membership: a stable hash of the document's group key."""
    return int.from_bytes(hashlib.sha256(group.encode()).digest()[:4], "big") % 100 < VAL_PERCENT


def python_roots(include_site_packages=False):
    import sysconfig
    paths = sysconfig.get_paths()
    roots = [paths["stdlib"]]
    if include_site_packages:
        roots += sorted({paths["purelib"], paths["platlib"]})
    return [str(Path(r).resolve()) for r in roots]


def python_documents(include_site_packages=False):
    """The .py files of this machine's Python (stdlib; site-packages on request). Grouped by file."""
    for root in python_roots(include_site_packages):
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__"
                                 and (include_site_packages or d not in ("site-packages", "dist-packages")))
            for name in sorted(filenames):
                if name.endswith(".py"):
                    path = Path(dirpath) / name
                    text = path.read_text(encoding="utf-8", errors="replace")
                    # a package's path inside any site-packages: two installs of it share their split
                    parts = path.relative_to(root).parts
                    group = str(Path(*parts[1:] if parts[0] in ("site-packages", "dist-packages") else parts))
                    for doc in split_text(text):
                        yield group, doc


def line_hashes(text, shortest=8):
    """The distinct lines of a text, stripped, of `shortest` characters or more, as stable 32-bit hashes."""
    import zlib
    return {zlib.crc32(line.encode("utf-8", "replace")) for line in map(str.strip, text.splitlines())
            if len(line) >= shortest}


def near_copy_roots(documents):
    """Near-copies share a split: a vendored module of another version, generated files of one family,
    a record that repeats another with an edit. Groups are joined when one has at least NEAR_COPY_SHARE
    of its distinct lines (stripped, 8 characters or more; 5 such lines at least) in the other. A line
    in more than 10% of the groups (20 at least, 200 at most) is boilerplate, a licence or an import,
    and joins nothing. Returns {group: root}, the smallest group of each joined set, so the split does
    not depend on the order the files were read in."""
    from collections import Counter, defaultdict
    from itertools import chain
    lines = defaultdict(set)
    for group, text in documents:
        lines[group] |= line_hashes(text)
    groups = sorted(lines)
    seen_in = Counter(chain.from_iterable(lines.values()))
    most = min(200, max(20, len(groups) // 10))
    joining = {h for h, n in seen_in.items() if 1 < n <= most}  # the lines that can join groups
    shared = [lines[group] & joining for group in groups]
    where = defaultdict(list)  # joining line -> the groups holding it
    for i, hs in enumerate(shared):
        for h in hs:
            where[h].append(i)
    parent = list(range(len(groups)))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, group in enumerate(groups):
        need = NEAR_COPY_SHARE * len(lines[group])
        if len(lines[group]) < 5 or len(shared[i]) < need:
            continue
        for j, count in Counter(chain.from_iterable(where[h] for h in shared[i])).items():
            if j != i and count >= need:
                a, b = sorted((root(i), root(j)))
                parent[b] = a  # the smaller index, hence the smaller group, is the root
    return {group: groups[root(i)] for i, group in enumerate(groups)}


FILE_SUFFIXES = (".txt", ".md", ".jsonl", ".parquet")


def list_corpus_files(spec):
    """A folder (searched recursively) or a glob pattern, filtered to the supported suffixes."""
    import glob
    path = Path(spec).expanduser()
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file()]
    elif path.is_file():
        files = [path]
    else:
        files = [Path(p) for p in glob.glob(str(path), recursive=True)]
    files = sorted(p for p in files if p.suffix.lower() in FILE_SUFFIXES)
    if not files:
        raise CacheError(f"no .txt, .md, .jsonl or .parquet files found at {spec}: pass a folder or a glob with --path")
    return files


def file_documents(spec):
    """The user's corpus. Each text file is split into documents; each jsonl/parquet record is one.
    The group of a document is its file and position, so even a single file gets a validation share."""
    files = list_corpus_files(spec)
    base = Path(spec).expanduser()
    base = base if base.is_dir() else Path(os.path.commonpath([str(p.parent) for p in files]))
    for path in files:
        rel = str(path.relative_to(base)) if path.is_relative_to(base) else str(path)
        suffix = path.suffix.lower()
        if suffix in (".txt", ".md"):
            texts = split_text(path.read_text(encoding="utf-8", errors="replace"))
        elif suffix == ".jsonl":
            texts = []
            for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    text = record if isinstance(record, str) else record["text"]
                    if not isinstance(text, str):
                        raise TypeError("text is not a string")
                except (ValueError, KeyError, TypeError):
                    raise CacheError(f"{path}:{lineno}: each jsonl line must be a string or an object "
                                     f"with a string 'text' field") from None
                texts.append(text)
        else:
            texts = read_parquet_texts(path)
        for i, text in enumerate(texts):
            if text.strip():
                yield f"{rel}#{i}", text


def read_parquet_texts(path):
    import pyarrow.parquet as pq
    table = pq.read_table(path)
    if "text" not in table.column_names:
        raise CacheError(f"{path} has no 'text' column (columns: {', '.join(table.column_names)})")
    return [t for t in table.column("text").to_pylist() if t]


def climbmix_base_url():
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/") + "/" + CLIMBMIX_REPO


def download_file(url, dest, retries=5, backoff=1.0, timeout=60):
    """Download url to dest: stream into dest.tmp, check length and parquet integrity, then rename.
    Retries with exponential backoff; a failed or truncated transfer never leaves a partial file."""
    import urllib.error
    import urllib.request
    dest = Path(dest)
    if dest.exists():
        return dest
    tmp = dest.with_name(dest.name + ".tmp")
    last_error = None
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                expected = response.headers.get("Content-Length")
                received = 0
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    received += len(chunk)
            if expected is not None and received != int(expected):
                raise OSError(f"truncated: got {received} of {expected} bytes")
            if dest.suffix == ".parquet":
                import pyarrow.parquet as pq
                try:
                    pq.ParquetFile(tmp).metadata
                except Exception as e:  # pyarrow raises several types for a corrupt file
                    raise OSError(f"not a valid parquet file ({e})") from None
            os.replace(tmp, dest)
            return dest
        except urllib.error.HTTPError as e:
            last_error = f"HTTP {e.code}"
            if 400 <= e.code < 500 and e.code != 429:
                tmp.unlink(missing_ok=True)
                break  # not found, forbidden...: retrying will not help
        except (OSError, ValueError) as e:  # URLError, timeouts, connection resets are OSErrors
            last_error = str(e)
        tmp.unlink(missing_ok=True)
        if attempt < retries - 1:
            time.sleep(backoff * 2**attempt)
    raise CacheError(f"could not download {url}: {last_error}; check the network or HF_ENDPOINT and re-run prepare")


def climbmix_documents(num_shards, download_dir):
    """The web-text shards: training shards 0..num_shards-1, validation the pinned last shard."""
    from tqdm import tqdm
    download_dir.mkdir(parents=True, exist_ok=True)
    base = climbmix_base_url()
    indices = list(range(num_shards)) + [CLIMBMIX_VAL_SHARD]
    paths = []
    for index in tqdm(indices, desc="download shards", unit="shard"):
        name = f"shard_{index:05d}.parquet"
        paths.append(download_file(f"{base}/{name}", download_dir / name))
    for index, path in zip(indices, paths):
        split = "val" if index == CLIMBMIX_VAL_SHARD else "train"
        for text in read_parquet_texts(path):
            yield split, text


def collect_documents(source, directory, *, path=None, include_site_packages=False, num_shards=1, max_chars=None):
    """The source's documents in their splits; returns (splits, characters, exact duplicates left out,
    groups that keep a near-copy's split). climbmix downloads its shards under directory/downloads."""
    from tqdm import tqdm
    if source == "python":
        stream = python_documents(include_site_packages)
    elif source == "files":
        stream = file_documents(path)
    else:
        stream = climbmix_documents(num_shards, Path(directory) / "downloads")
    # Exact copies (a package installed twice, vendored modules, repeated records) are kept once: a copy
    # in each split would put validation text into training. The first one met keeps its split.
    # climbmix keeps the seed's pinned validation shard whole.
    seen = set() if source != "climbmix" else None
    documents, chars, duplicates = [], 0, 0
    for group, text in tqdm(stream, desc="read documents", unit="doc", mininterval=1):
        if seen is not None:
            key = hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=16).digest()
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
        documents.append((group, text))
        chars += len(text)
        if max_chars and chars >= max_chars:
            break
    roots = near_copy_roots(documents) if seen is not None else {}
    splits = {"train": [], "val": []}
    for group, text in documents:
        group = roots.get(group, group)
        splits[group if group in ("train", "val") else ("val" if is_val(group) else "train")].append(text)
    near_copies = sum(group != root for group, root in roots.items())
    for split, docs in splits.items():
        if not docs:
            joined = f", {near_copies:,} of them near-copies that keep another's split" if near_copies else ""
            raise CacheError(f"the {split} split is empty: the source has too few documents ({len(documents):,}"
                             f"{joined}); add more text")
    return splits, chars, duplicates, near_copies
