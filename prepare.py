"""
The fixed harness: data, tokenizer, dataloader and the metric.

One-time preparation (pick a profile and a data source; the result is frozen in a cache folder):

    uv run prepare.py --source python --profile tiny       # offline: this machine's Python source
    uv run prepare.py --source climbmix --profile h100     # the web-text shards over HTTP
    uv run prepare.py --source files --path ~/corpus       # your own .txt/.md/.jsonl/.parquet files

At run time train.py imports from here:

    from prepare import MAX_SEQ_LEN, TIME_BUDGET, Tokenizer, make_dataloader, evaluate_bpb

The constants come from the active cache (AUTORESEARCH_CACHE, default ~/.cache/autoresearch), whose
manifest.json records the profile, the constants, the source and the hashes of everything made.
DO NOT CHANGE this file during experiments: it is the fixed metric, and the lab checks it by hash.
"""

import hashlib
import json
import math
import os
import sys
import time
from bisect import bisect_right
from pathlib import Path

import numpy as np
import tiktoken
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------
# Profiles: the fixed constants of one prepared cache
# ---------------------------------------------------------------------------

PROFILES = {
    # the original project's numbers, for one H100-class GPU
    "h100": dict(max_seq_len=2048, vocab_size=8192, eval_tokens=40 * 524288, time_budget=300),
    # a consumer GPU or Apple silicon
    "small": dict(max_seq_len=1024, vocab_size=8192, eval_tokens=4 * 524288, time_budget=300),
    # a CPU laptop, a workshop, CI
    "tiny": dict(max_seq_len=256, vocab_size=4096, eval_tokens=2**16, time_budget=60),
}
DEFAULT_NUM_SHARDS = {"h100": 10, "small": 4, "tiny": 1}  # climbmix training shards per profile
MANIFEST_FORMAT = 1
DOC_MAX_CHARS = 8000  # long files are split into documents of at most this many characters
VAL_PERCENT = 5  # share of documents pinned to the validation split (python and files sources)
NEAR_COPY_SHARE = 0.5  # a file with at least this share of its lines in another file keeps that one's split

SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)
SPECIAL_TOKENS = ["<|bos|>", "<|reserved_1|>", "<|reserved_2|>", "<|reserved_3|>"]
BOS_TOKEN = SPECIAL_TOKENS[0]

CLIMBMIX_REPO = "datasets/karpathy/climbmix-400b-shuffle/resolve/main"
CLIMBMIX_VAL_SHARD = 6542  # the last shard, pinned for validation


class CacheError(RuntimeError):
    """The prepared cache is missing, broken or of another kind than asked for."""


def _one_line_errors(exc_type, exc, tb, _previous=sys.excepthook):
    # A missing cache is a usage error, not a crash: say what to run, in one line.
    if issubclass(exc_type, CacheError):
        print(f"error: {exc}", file=sys.stderr)
    else:
        _previous(exc_type, exc, tb)


sys.excepthook = _one_line_errors


def cache_dir():
    return Path(os.environ.get("AUTORESEARCH_CACHE", "~/.cache/autoresearch")).expanduser()


def prepare_hint(profile="tiny", source="python"):
    return f"run `uv run prepare.py --source {source} --profile {profile}`"


def load_manifest(directory=None):
    """Read and sanity-check the manifest of a prepared cache; CacheError says how to fix it."""
    directory = Path(directory) if directory else cache_dir()
    path = directory / "manifest.json"
    if not path.exists():
        raise CacheError(f"no prepared data in {directory}: {prepare_hint()} (or set AUTORESEARCH_CACHE)")
    manifest = {}
    try:
        manifest = json.loads(path.read_text())
        if manifest["format"] != MANIFEST_FORMAT:
            raise ValueError("unknown manifest format")
        for name, meta in manifest["files"].items():
            if not (directory / name).exists():
                raise ValueError(f"{name} is missing")
            if (directory / name).stat().st_size != meta["bytes"]:
                raise ValueError(f"{name} has the wrong size")
        manifest["constants"]["MAX_SEQ_LEN"], manifest["profile"], manifest["source"]["name"]
    except (KeyError, TypeError, ValueError) as e:
        source = manifest.get("source") if isinstance(manifest, dict) else None
        hint = prepare_hint(manifest.get("profile", "tiny"), source.get("name", "python")) \
            if isinstance(source, dict) else prepare_hint()
        raise CacheError(f"the cache in {directory} is broken ({e}): {hint} --force") from None
    return manifest


# The constants that train.py imports are read from the active manifest on first use, so that
# `import prepare` works before anything is prepared and tests can point AUTORESEARCH_CACHE elsewhere.
_CONSTANTS = ("MAX_SEQ_LEN", "VOCAB_SIZE", "EVAL_TOKENS", "TIME_BUDGET", "PROFILE")


def __getattr__(name):
    if name in _CONSTANTS:
        manifest = load_manifest()
        values = dict(manifest["constants"], PROFILE=manifest["profile"])
        globals().update({k: values[k] for k in _CONSTANTS})
        return values[name]
    raise AttributeError(f"module 'prepare' has no attribute {name!r}")


def best_device():
    """cuda, then mps, then cpu; AUTORESEARCH_DEVICE forces one."""
    if os.environ.get("AUTORESEARCH_DEVICE"):
        return torch.device(os.environ["AUTORESEARCH_DEVICE"])
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


# ---------------------------------------------------------------------------
# Data sources: each yields (group, text); the group decides the split
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# Tokenizer: BPE trained with rustbpe, used through tiktoken, stored without pickle
# ---------------------------------------------------------------------------

class Tokenizer:
    """A tiktoken encoding loaded from plain files (base64 ranks + json): loading runs no code."""

    def __init__(self, enc):
        self.enc = enc
        self.bos_token_id = enc.encode_single_token(BOS_TOKEN)

    @classmethod
    def from_directory(cls, tokenizer_dir=None):
        import base64
        directory = Path(tokenizer_dir) if tokenizer_dir else cache_dir() / "tokenizer"
        if tokenizer_dir is None:
            load_manifest()  # a clear message when nothing is prepared
        meta = json.loads((directory / "tokenizer.json").read_text())
        ranks = {}
        for line in (directory / "ranks.txt").read_text().splitlines():
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
        enc = tiktoken.Encoding(name="autoresearch", pat_str=meta["pattern"], mergeable_ranks=ranks,
                                special_tokens=meta["special_tokens"])
        return cls(enc)

    def get_vocab_size(self):
        return self.enc.n_vocab

    def get_bos_token_id(self):
        return self.bos_token_id

    def encode(self, text, prepend=None, num_threads=8):
        prefix = [] if prepend is None else [prepend if isinstance(prepend, int) else self.enc.encode_single_token(prepend)]
        if isinstance(text, str):
            return prefix + self.enc.encode_ordinary(text)
        return [prefix + ids for ids in self.enc.encode_ordinary_batch(text, num_threads=num_threads)]

    def decode(self, ids):
        return self.enc.decode(list(ids))


def train_tokenizer(texts, vocab_size, directory):
    """Train BPE on an iterator of texts and write tokenizer.json, ranks.txt and token_bytes.npy."""
    import base64
    import rustbpe
    n_special = len(SPECIAL_TOKENS)
    assert vocab_size > 256 + n_special, "vocab_size must leave room for the 256 byte tokens"
    bpe = rustbpe.Tokenizer()
    bpe.train_from_iterator(texts, vocab_size - n_special, pattern=SPLIT_PATTERN)
    ranks = {bytes(token): rank for token, rank in bpe.get_mergeable_ranks()}
    special = {name: len(ranks) + i for i, name in enumerate(SPECIAL_TOKENS)}
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f"{base64.b64encode(token).decode()} {rank}" for token, rank in sorted(ranks.items(), key=lambda kv: kv[1])]
    (directory / "ranks.txt").write_text("\n".join(lines) + "\n")
    (directory / "tokenizer.json").write_text(json.dumps(
        {"pattern": bpe.get_pattern(), "special_tokens": special, "bos": BOS_TOKEN}, indent=1))
    token_bytes = np.zeros(len(ranks) + n_special, dtype=np.int32)  # special tokens count 0 bytes
    for token, rank in ranks.items():
        token_bytes[rank] = len(token)
    np.save(directory / "token_bytes.npy", token_bytes)


def get_token_bytes(device="cpu"):
    """UTF-8 byte length of every token id (0 for special tokens), as a tensor; no pickle involved."""
    array = np.load(cache_dir() / "tokenizer" / "token_bytes.npy", allow_pickle=False)
    return torch.from_numpy(array.astype(np.int64)).to(device)


# ---------------------------------------------------------------------------
# Token shards: documents tokenized once at prepare time, each prefixed with BOS
# ---------------------------------------------------------------------------

def load_split(split, directory=None):
    """(tokens, offsets) of one split: document i is tokens[offsets[i]:offsets[i+1]], BOS first."""
    assert split in ("train", "val"), f"split must be 'train' or 'val', not {split!r}"
    directory = Path(directory) if directory else cache_dir()
    manifest = load_manifest(directory)
    data = directory / "data"
    dtype = np.dtype(manifest["token_dtype"])
    tokens = np.memmap(data / f"{split}.bin", dtype=dtype, mode="r")
    offsets = np.load(data / f"{split}_offsets.npy", allow_pickle=False)
    return tokens, offsets


class _Packer:
    """Best-fit packing of documents into rows that each start with BOS, with no padding.

    A buffer of pieces is kept sorted by length. Each row takes the longest piece that fits the
    space left, again and again; when nothing fits, the longest piece is cropped to fill the row and
    its tail (behind a fresh BOS) goes back into the buffer for a later row, so no token is dropped.
    """

    def __init__(self, tokens, offsets, bos, order_fn, buffer_size=1000, wrap=True):
        self.tokens, self.offsets, self.bos = tokens, offsets, bos
        self.order_fn = order_fn  # epoch -> document order
        self.wrap = wrap  # start another epoch when the documents run out (else: stop)
        self.buffer_size = buffer_size
        self.lengths, self.pieces = [], []  # sorted by length; piece = (start, end, needs_bos)
        self.epoch, self.order, self.cursor = 0, order_fn(0), 0

    def _push(self, piece):
        start, end, needs_bos = piece
        length = end - start + needs_bos
        i = bisect_right(self.lengths, length)
        self.lengths.insert(i, length)
        self.pieces.insert(i, piece)

    def _refill(self):
        while len(self.pieces) < self.buffer_size:
            if self.cursor == len(self.order):
                if not self.wrap:
                    return
                self.epoch += 1
                self.order, self.cursor = self.order_fn(self.epoch), 0
            doc = self.order[self.cursor]
            self.cursor += 1
            self._push((int(self.offsets[doc]), int(self.offsets[doc + 1]), False))

    def fill(self, row):
        """Fill one row (a 1-d int64 array) completely; return the epoch it was drawn from."""
        epoch, pos, width = self.epoch, 0, len(row)
        while pos < width:
            self._refill()
            space = width - pos
            if not self.pieces:
                raise EOFError("out of documents")
            i = bisect_right(self.lengths, space) - 1
            if i < 0:  # nothing fits: crop the longest piece, keep its tail for later
                i = len(self.pieces) - 1
            start, end, needs_bos = self.pieces.pop(i)
            del self.lengths[i]
            if needs_bos:
                row[pos] = self.bos
                pos += 1
            take = min(end - start, width - pos)
            row[pos:pos + take] = self.tokens[start:start + take]
            pos += take
            if start + take < end:
                self._push((start + take, end, True))
        return epoch


def to_device(cpu, device):
    """A host tensor onto the device. On CUDA through pinned memory and without blocking: a plain
    copy would first wait for all queued GPU work, leaving the GPU idle while the next is launched."""
    if device.type != "cuda":
        return cpu.to(device)
    return cpu.pin_memory().to(device, non_blocking=True)


def make_dataloader(tokenizer, B, T, split, buffer_size=1000, device=None, seed=0):
    """Endless batches (inputs, targets, epoch): B rows of T tokens, each row starting with BOS.

    Training documents are shuffled per epoch (by seed and epoch); validation documents keep their
    pinned order. Under the lab the seed is the lab's (AUTORESEARCH_SEED), whatever `seed` says: the
    lab runs each experiment at its own seed schedule, and a train.py cannot pick a lucky data order.
    Batches land on `device` (default: the best available), pinned first on CUDA."""
    device = torch.device(device) if device is not None else best_device()
    if os.environ.get("AUTORESEARCH_SEED"):
        seed = int(os.environ["AUTORESEARCH_SEED"])
    tokens, offsets = load_split(split)
    n_docs = len(offsets) - 1
    if split == "train":
        def order_fn(epoch):
            return np.random.default_rng([seed, epoch]).permutation(n_docs)
    else:
        def order_fn(epoch):
            return np.arange(n_docs)
    buffer_size = max(1, min(buffer_size, n_docs // 4))  # a small corpus: keep epochs apart
    packer = _Packer(tokens, offsets, tokenizer.get_bos_token_id(), order_fn, buffer_size)
    while True:
        batch = np.empty((B, T + 1), dtype=np.int64)
        epoch = min(packer.fill(row) for row in batch)
        gpu = to_device(torch.from_numpy(batch), device)
        yield gpu[:, :-1].contiguous(), gpu[:, 1:].contiguous(), epoch


# ---------------------------------------------------------------------------
# Evaluation (DO NOT CHANGE — this is the fixed metric)
# ---------------------------------------------------------------------------

_VAL_ROWS = {}


def validation_packer(tokens, offsets, bos):
    """The validation documents in their pinned order, packed into rows once, with no wrap-around."""
    return _Packer(tokens, offsets, bos, lambda e: np.arange(len(offsets) - 1), wrap=False)


def validation_rows(tokenizer, directory=None):
    """The fixed evaluation set: EVAL_TOKENS // MAX_SEQ_LEN rows of MAX_SEQ_LEN + 1 tokens, packed
    from the validation documents in their pinned order. Identical whatever batch size is used."""
    directory = Path(directory) if directory else cache_dir()
    manifest = load_manifest(directory)
    T, eval_tokens = manifest["constants"]["MAX_SEQ_LEN"], manifest["constants"]["EVAL_TOKENS"]
    key = (str(directory), manifest["data_hash"])
    if key not in _VAL_ROWS:
        tokens, offsets = load_split("val", directory)
        n_rows = eval_tokens // T
        packer = validation_packer(tokens, offsets, tokenizer.get_bos_token_id())
        rows = np.empty((n_rows, T + 1), dtype=np.int64)
        try:
            for row in rows:
                packer.fill(row)
        except EOFError:
            raise CacheError(f"the validation split is too small for EVAL_TOKENS={eval_tokens:,}: prepare "
                             f"again with a smaller --eval-tokens or a bigger corpus") from None
        _VAL_ROWS[key] = torch.from_numpy(rows)
    return _VAL_ROWS[key]


def validation_capacity(tokens, offsets, bos, T, limit):
    """How many evaluation rows of T + 1 tokens the validation documents fill, counting up to limit."""
    packer = validation_packer(tokens, offsets, bos)
    row = np.empty(T + 1, dtype=np.int64)
    for n in range(limit):
        try:
            packer.fill(row)
        except EOFError:
            return n
    return limit


def constants_asked(manifest):
    """A manifest's constants as they were asked for, before any was lowered to fit the corpus."""
    return {**manifest["constants"], **manifest.get("lowered", {})}


def score_rows(logits_of, rows, token_bytes, batch_size, device):
    """(nats, bytes, uniform nats) over the evaluation rows: logits_of(x) gives the logits for a batch
    of inputs, the loss of each target token is computed here from them (the model never sees the
    targets), and special tokens (0 bytes) count in neither sum. "uniform nats" is what a model that
    knows nothing (uniform over the vocabulary) would score, an upper bound for any real model."""
    total_nats = torch.zeros((), dtype=torch.float64, device=device)
    total_bytes = torch.zeros((), dtype=torch.int64, device=device)
    counted = torch.zeros((), dtype=torch.int64, device=device)
    vocab = len(token_bytes)
    for i in range(0, len(rows), batch_size):
        batch = to_device(rows[i:i + batch_size], device)
        x, y = batch[:, :-1].contiguous(), batch[:, 1:].contiguous()
        logits = logits_of(x)
        if tuple(logits.shape) != (*x.shape, vocab):
            raise ValueError(f"the model returned logits of shape {tuple(logits.shape)} for inputs of shape "
                             f"{tuple(x.shape)}: expected {(*x.shape, vocab)} (batch, sequence, vocabulary)")
        loss = F.cross_entropy(logits.reshape(-1, vocab).float(), y.reshape(-1), reduction="none").double()
        nbytes = token_bytes[y.reshape(-1)]
        total_nats += (loss * (nbytes > 0)).sum()
        total_bytes += nbytes.sum()
        counted += (nbytes > 0).sum()
    return total_nats.item(), int(total_bytes.item()), int(counted.item()) * math.log(vocab)


@torch.no_grad()
def evaluate_bpb(model, tokenizer, batch_size):
    """Bits per byte on the fixed validation rows: the sum of the model's loss in nats over target
    tokens, divided by ln(2) times the sum of their UTF-8 bytes. Special tokens (0 bytes) are
    excluded from both sums. The model is called as model(idx) and must return logits of shape
    (batch, sequence, vocabulary); the loss is computed here.

    Under the lab (AUTORESEARCH_HANDOFF names the run's hand-off file) nothing is evaluated in this
    process: the model is written there as a torch.export program (see hand_off), the lab's evaluator
    computes val_bpb from it outside the experiment, and nan is returned."""
    if os.environ.get("AUTORESEARCH_HANDOFF"):
        hand_off(model, batch_size, Path(os.environ["AUTORESEARCH_HANDOFF"]))
        return math.nan
    device = next(model.parameters()).device
    nats, nbytes, _ = score_rows(model, validation_rows(tokenizer), get_token_bytes(device), batch_size, device)
    return nats / (math.log(2) * nbytes)


def hand_off(model, batch_size, path):
    """Write model(idx) -> logits as a torch.export program (graph and weights, no Python code) for
    inputs of the evaluation shape: min(batch_size, rows) x MAX_SEQ_LEN tokens. A model that cannot be
    exported ends the run with the export error's first line."""
    import torch.export
    model = getattr(model, "_orig_mod", model)  # a torch.compile wrapper: the module it compiles
    device = next(model.parameters()).device
    constants = load_manifest()["constants"]
    T = constants["MAX_SEQ_LEN"]
    example = torch.zeros((max(1, min(batch_size, constants["EVAL_TOKENS"] // T)), T), dtype=torch.long, device=device)
    try:
        program = torch.export.export(model, (example,), strict=False).run_decompositions()
    except Exception as e:
        lines = str(e).strip().splitlines()
        raise SystemExit(f"FAIL: the model cannot be exported for the lab's evaluator ({type(e).__name__}: "
                         f"{lines[0][:200] if lines else ''}); see program.md on what forward may do") from None
    partial = path.with_name("partial-" + path.name)
    torch.export.save(program, partial)
    os.replace(partial, path)  # whole or not at all


# ---------------------------------------------------------------------------
# Preparation (run once per profile and source)
# ---------------------------------------------------------------------------

def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def combined_hash(hashes):
    return hashlib.sha256("".join(hashes).encode()).hexdigest()


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


def source_spec(args):
    spec = {"name": args.source}
    if args.source == "python":
        spec.update(roots=python_roots(args.include_site_packages), include_site_packages=args.include_site_packages,
                    python=sys.version.split()[0])
    elif args.source == "files":
        spec.update(path=str(Path(args.path).expanduser().resolve()))
    else:
        spec.update(num_shards=args.num_shards, base_url=climbmix_base_url())
    if args.max_chars:
        spec["max_chars"] = args.max_chars
    return spec


def collect_documents(args, directory):
    """The source's documents in their splits; returns (splits, characters, exact duplicates left out,
    groups that keep a near-copy's split)."""
    from tqdm import tqdm
    if args.source == "python":
        stream = python_documents(args.include_site_packages)
    elif args.source == "files":
        stream = file_documents(args.path)
    else:
        stream = climbmix_documents(args.num_shards, directory / "downloads")
    # Exact copies (a package installed twice, vendored modules, repeated records) are kept once: a copy
    # in each split would put validation text into training. The first one met keeps its split.
    # climbmix keeps the seed's pinned validation shard whole.
    seen = set() if args.source != "climbmix" else None
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
        if args.max_chars and chars >= args.max_chars:
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


def cache_differences(existing, wanted):
    """What differs between a prepared cache and the one asked for: 'what: there, asked' parts."""
    def show(value):
        return "unset" if value is None else f"{value:,}" if isinstance(value, int) and value > 9999 else str(value)
    pairs = [("profile", existing.get("profile"), wanted["profile"])]
    pairs += [(f"source {key}", existing["source"].get(key), wanted["source"].get(key))
              for key in dict.fromkeys([*existing["source"], *wanted["source"]])]
    asked = constants_asked(existing)
    pairs += [(key, asked.get(key), wanted["constants"].get(key)) for key in wanted["constants"]]
    return "; ".join(f"{what} {show(there)} there, {show(want)} asked" for what, there, want in pairs if there != want)


def prepare(args):
    """Build (or confirm) the cache for one profile + source; returns the manifest."""
    directory = Path(args.cache).expanduser() if args.cache else cache_dir()
    constants = dict(PROFILES[args.profile])
    overrides = {k: getattr(args, k) for k in constants if getattr(args, k) is not None}
    constants.update(overrides)
    if constants["vocab_size"] <= 256 + len(SPECIAL_TOKENS) or constants["vocab_size"] > 2**32:
        raise CacheError(f"--vocab-size must be above {256 + len(SPECIAL_TOKENS)} (the byte tokens and special tokens)")
    if constants["eval_tokens"] <= 0 or constants["eval_tokens"] % constants["max_seq_len"]:
        raise CacheError(f"--eval-tokens must be a positive multiple of the sequence length ({constants['max_seq_len']})")
    if args.source == "files" and not args.path:
        raise CacheError("--source files needs --path DIR_OR_GLOB")
    if args.source == "climbmix" and args.num_shards is None:
        args.num_shards = DEFAULT_NUM_SHARDS[args.profile]
    wanted = dict(profile=args.profile, constants={k.upper(): v for k, v in constants.items()},
                  source=source_spec(args))

    manifest_path = directory / "manifest.json"
    if manifest_path.exists() and not args.force:
        try:
            existing = load_manifest(directory)
        except CacheError:
            existing = None
        if existing is None:
            raise CacheError(f"the cache in {directory} is broken: re-run with --force to rebuild it")
        same = (existing.get("profile") == wanted["profile"] and existing.get("source") == wanted["source"]
                and wanted["constants"] in (existing.get("constants"), constants_asked(existing)))
        if same:
            print(f"already prepared: {directory} ({args.profile}, {args.source}); nothing to do")
            return existing
        raise CacheError(f"{directory} already holds another cache ({cache_differences(existing, wanted)}): set "
                         f"AUTORESEARCH_CACHE to another folder, or pass --force to replace it")

    t0 = time.time()
    directory.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)  # the manifest is written last: no manifest, no cache
    splits, chars, duplicates, near_copies = collect_documents(args, directory)
    notes = [f"{duplicates:,} exact duplicates left out"] * bool(duplicates) \
        + [f"{near_copies:,} near-copies kept in the split of the file they resemble"] * bool(near_copies)
    print(f"documents: {len(splits['train']):,} train, {len(splits['val']):,} val, {chars / 1e6:.1f} M characters"
          + (f" ({'; '.join(notes)})" if notes else ""))

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

    t2 = time.time()
    data_dir = directory / "data"
    data_dir.mkdir(exist_ok=True)
    dtype = np.uint16 if tokenizer.get_vocab_size() <= 2**16 else np.uint32
    counts = {split: tokenize_split(tokenizer, docs, data_dir / f"{split}.bin", data_dir / f"{split}_offsets.npy",
                                    dtype, f"tokenize {split}") for split, docs in splits.items()}
    print(f"tokens: {counts['train']:,} train, {counts['val']:,} val, tokenized in {time.time() - t2:.1f}s")
    # the fixed evaluation set must fit in the validation split: checked now, not at the first run
    lowered = fit_eval_tokens(tokenizer, data_dir, dtype, constants, overrides, args.profile)

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
    print(f"prepared {directory} in {time.time() - t0:.1f}s (profile {args.profile}, data {data_hash[:12]})")
    return manifest


def build_parser():
    import argparse
    p = argparse.ArgumentParser(description="Prepare data and tokenizer for autoresearch (run once).")
    p.add_argument("--source", choices=["python", "climbmix", "files"], default="python",
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
    args = build_parser().parse_args(argv)
    try:
        prepare(args)
    except CacheError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
