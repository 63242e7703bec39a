"""The data sources: python, files, and climbmix against a real HTTP server on loopback.
Run: uv run pytest tests/test_sources.py"""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import prepare
from harness import sources
from conftest import run_prepare


def test_python_source_is_this_machines_stdlib_split_into_bounded_documents():
    docs = []
    for group, text in sources.python_documents():
        docs.append((group, text))
        if len(docs) == 2000:
            break
    assert all(group.endswith(".py") and "site-packages" not in group for group, _ in docs)
    assert all(0 < len(text) <= sources.DOC_MAX_CHARS for _, text in docs)
    assert docs == [d for _, d in zip(range(2000), sources.python_documents())]  # deterministic


def test_split_text_keeps_every_character():
    text = "".join(f"line {i} " + "x" * (i % 300) + "\n" for i in range(2000)) + "y" * 20000
    docs = sources.split_text(text, max_chars=1000)
    assert "".join(docs) == text and max(map(len, docs)) <= 1000


def python_tree(root, files):
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_exact_copies_are_kept_once_so_no_validation_text_is_trained_on(tmp_path, monkeypatch):
    """A vendored copy of a module: the copy whose path hashes to the other split would put validation
    text into training."""
    root = tmp_path / "venv"
    modules = {f"pkg/mod_{i}.py": f"def f_{i}(x):\n    return x * {i}\n" for i in range(200)}
    python_tree(root, {**modules, **{f"tool/_vendor/{k}": v for k, v in modules.items()}, "own.py": "OWN = 1\n"})
    assert any(sources.is_val(k) != sources.is_val(f"tool/_vendor/{k}") for k in modules)  # the case that leaks
    monkeypatch.setattr(sources, "python_roots", lambda include_site_packages=False: [str(root)])

    splits, chars, duplicates, _ = sources.collect_documents("python", tmp_path, include_site_packages=True)

    texts = splits["train"] + splits["val"]
    assert duplicates == 200 and len(texts) == len(set(texts)) == 201
    assert not set(splits["train"]) & set(splits["val"])
    assert chars == sum(map(len, texts))


def test_two_installs_of_a_package_share_their_split(tmp_path, monkeypatch):
    """The base Python's site-packages (inside its stdlib folder) and a venv's, each with its own
    version of the same package: the two versions go to the same split."""
    base, venv = tmp_path / "base", tmp_path / "venv"
    python_tree(base, {f"site-packages/pkg/mod_{i}.py": f"VERSION, N = 1, {i}\n" for i in range(200)})
    python_tree(venv, {f"pkg/mod_{i}.py": f"VERSION, N = 2, {i}\n" for i in range(200)})
    monkeypatch.setattr(sources, "python_roots", lambda include_site_packages=False: [str(base), str(venv)])

    splits, _, duplicates, _ = sources.collect_documents("python", tmp_path, include_site_packages=True)

    assert duplicates == 0 and len(splits["val"]) > 0
    for i in range(200):
        assert (f"VERSION, N = 1, {i}\n" in splits["val"]) == (f"VERSION, N = 2, {i}\n" in splits["val"])


def module_text(i, version):
    return "".join(f"def step_{i}_{k}(x):  # part {k} of module {i}\n    return x + {i * 100 + k}\n"
                   for k in range(8)) + f"VERSION = '{version}'  # of module {i}\n"


def test_near_copies_share_a_split_whichever_their_paths(tmp_path, monkeypatch):
    """A package vendored at another version: not an exact copy, so only the near-copy rule keeps the
    two out of different splits."""
    root = tmp_path / "venv"
    python_tree(root, {**{f"pkg/mod_{i}.py": module_text(i, "1.0") for i in range(200)},
                       **{f"tool/_vendor/pkg/mod_{i}.py": module_text(i, "0.9") for i in range(200)}})
    assert any(sources.is_val(f"pkg/mod_{i}.py") != sources.is_val(f"tool/_vendor/pkg/mod_{i}.py")
               for i in range(200))  # the case that leaks
    monkeypatch.setattr(sources, "python_roots", lambda include_site_packages=False: [str(root)])

    splits, _, duplicates, near_copies = sources.collect_documents("python", tmp_path, include_site_packages=True)

    assert duplicates == 0 and near_copies == 200 and len(splits["val"]) > 0
    for i in range(200):
        assert (module_text(i, "1.0") in splits["val"]) == (module_text(i, "0.9") in splits["val"])
    documents = [(f"pkg/mod_{i}.py", module_text(i, "1.0")) for i in range(200)] \
        + [(f"tool/_vendor/pkg/mod_{i}.py", module_text(i, "0.9")) for i in range(200)]
    assert sources.near_copy_roots(documents) == sources.near_copy_roots(documents[::-1])  # order-free


def test_lines_most_files_share_join_nothing(tmp_path, monkeypatch):
    """A licence header on every file of a small corpus is more than half of each short file: it must
    not join them all into one split."""
    header = "".join(f"# Copyright line {k} of the licence every file of this project carries.\n" for k in range(10))
    root = tmp_path / "src"
    python_tree(root, {f"app/mod_{i}.py": header + f"def run_{i}(x):\n    return x * {i} + {i * 7}\n"
                       + f"RESULT_{i} = run_{i}({i})  # the module's own answer\n" for i in range(400)})
    monkeypatch.setattr(sources, "python_roots", lambda include_site_packages=False: [str(root)])

    splits, _, _, near_copies = sources.collect_documents("python", tmp_path, include_site_packages=False)

    assert near_copies == 0
    assert 0.02 < len(splits["val"]) / 400 < 0.09


def test_a_split_left_empty_by_near_copies_says_so(tmp_path, capsys):
    """Fifteen drafts of one note: file by file one of them would be validated on, but as near-copies
    they keep one split, so the other is empty, and the error says why."""
    names = sorted(f"draft_{k:03d}.md" for k in range(300))
    val = [n for n in names if sources.is_val(f"{n}#0")]
    train = [n for n in names if not sources.is_val(f"{n}#0")]
    assert train[0] < val[0]  # the smallest name, whose split they all keep, is a training one
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for n, name in enumerate(train[:14] + val[:1]):
        (corpus / name).write_text("".join(f"Paragraph {k} of the note on quintessa murmurations.\n" for k in range(9))
                                   + f"Draft number {n}, revised.\n")
    assert run_prepare(tmp_path / "cache", "--source", "files", "--path", str(corpus), "--profile", "tiny") == 2
    err = capsys.readouterr().err
    assert "the val split is empty" in err and "(15, 14 of them near-copies that keep another's split)" in err


def test_files_source_leaves_repeated_records_out_and_says_so(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    with open(corpus / "records.jsonl", "w") as f:
        for i in range(400):
            f.write(json.dumps({"text": f"record {i % 100}: " + "quintessa murmuration " * 80}) + "\n")
    cache = tmp_path / "cache"
    assert run_prepare(cache, "--source", "files", "--path", str(corpus), "--profile", "tiny",
                       "--vocab-size", "300", "--eval-tokens", "256") == 0
    manifest = prepare.load_manifest(cache)
    assert manifest["duplicates"] == 300 and sum(manifest["documents"].values()) == 100
    assert "(300 exact duplicates left out)" in capsys.readouterr().out


def test_validation_pinning_is_stable_and_about_five_percent():
    groups = [f"pkg/module_{i}.py" for i in range(20000)]
    share = sum(map(sources.is_val, groups)) / len(groups)
    assert 0.04 < share < 0.06
    assert [sources.is_val(g) for g in groups[:100]] == [sources.is_val(g) for g in groups[:100]]


def make_corpus(root):
    """A corpus of every supported kind, words the stdlib never uses."""
    (root / "notes").mkdir(parents=True)
    words = ["zorblax", "quintessa", "murmuration", "flibbertigibbet", "kerfuffle", "snollygoster"]
    for i in range(30):
        (root / "notes" / f"n{i}.txt").write_text(f"note {i}: " + " ".join(words[(i + j) % 6] for j in range(400)) + "\n")
    (root / "readme.md").write_text("# Heading\n\n" + "lorem ipsum dolor " * 500)
    with open(root / "records.jsonl", "w") as f:
        for i in range(200):
            f.write(json.dumps({"text": f"record {i}: " + " ".join(words[::-1]) * 5}) + "\n")
        f.write(json.dumps("a bare string record") + "\n")
    pq.write_table(pa.table({"text": [f"parquet row {i} " + words[i % 6] * 30 for i in range(300)]}),
                   root / "table.parquet")
    (root / "ignored.bin").write_bytes(b"\x00\x01")
    return words


def test_files_source_reads_every_supported_format(tmp_path):
    make_corpus(tmp_path / "corpus")
    docs = list(sources.file_documents(str(tmp_path / "corpus")))
    texts = "".join(t for _, t in docs)
    assert "zorblax" in texts and "lorem ipsum" in texts and "record 199" in texts
    assert "a bare string record" in texts and "parquet row 299" in texts
    assert sum(1 for g, _ in docs if g.startswith("records.jsonl#")) == 201
    globbed = list(sources.file_documents(str(tmp_path / "corpus" / "notes" / "*.txt")))
    assert len(globbed) == 30


def test_files_source_end_to_end_with_a_corpus_never_seen(tmp_path):
    words = make_corpus(tmp_path / "corpus")
    cache = tmp_path / "cache"
    assert run_prepare(cache, "--source", "files", "--path", str(tmp_path / "corpus"), "--profile", "tiny",
                       "--vocab-size", "512", "--eval-tokens", "512") == 0
    tok = prepare.Tokenizer.from_directory(cache / "tokenizer")
    assert len(tok.encode("zorblax")) <= 2  # the tokenizer learned this corpus
    manifest = prepare.load_manifest(cache)
    assert manifest["source"]["name"] == "files" and manifest["documents"]["val"] > 0
    tokens, _ = prepare.load_split("train", cache)
    assert tok.decode(tokens[:2000]).count(words[0]) > 0


def test_files_source_errors_are_one_clear_line(tmp_path):
    with pytest.raises(prepare.CacheError, match="no .txt, .md, .jsonl or .parquet files"):
        list(sources.file_documents(str(tmp_path)))
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"body": "no text field"}\n')
    with pytest.raises(prepare.CacheError, match=r"bad.jsonl:2: .*'text' field"):
        list(sources.file_documents(str(tmp_path / "bad.jsonl")))


# ---------------------------------------------------------------------------
# climbmix over HTTP, against a loopback server
# ---------------------------------------------------------------------------

def parquet_bytes(texts, path):
    pq.write_table(pa.table({"text": texts}), path)
    return path.read_bytes()


class Shards:
    """A fake dataset host on 127.0.0.1: serves files, and misbehaves on request."""

    def __init__(self):
        self.files, self.fail, self.truncate, self.hits = {}, {}, {}, {}
        shards = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                shards.hits[name] = shards.hits.get(name, 0) + 1
                if not self.path.startswith("/" + sources.CLIMBMIX_REPO + "/") or name not in shards.files:
                    self.send_error(404)
                    return
                if shards.fail.get(name, 0) > 0:
                    shards.fail[name] -= 1
                    self.send_error(503)
                    return
                body = shards.files[name]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if shards.truncate.get(name, 0) > 0:  # promise the whole file, send half, hang up
                    shards.truncate[name] -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def shards(tmp_path, monkeypatch):
    server = Shards()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    rng = np.random.default_rng(0)
    vocab = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "lambda", "sigma"]
    for index in (0, 1, sources.CLIMBMIX_VAL_SHARD):
        texts = [" ".join(rng.choice(vocab, size=300)) + f" doc {index}-{i}." for i in range(150)]
        server.files[f"shard_{index:05d}.parquet"] = parquet_bytes(texts, tmp_path / "tmp.parquet")
    yield server
    server.close()


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_retries_server_errors_then_succeeds(shards, tmp_path):
    shards.fail["shard_00000.parquet"] = 2
    dest = sources.download_file(f"{sources.climbmix_base_url()}/shard_00000.parquet", tmp_path / "shard_00000.parquet",
                                 backoff=0.01)
    assert dest.read_bytes() == shards.files["shard_00000.parquet"]
    assert shards.hits["shard_00000.parquet"] == 3


def test_truncated_transfer_is_retried_and_leaves_no_partial_file(shards, tmp_path):
    shards.truncate["shard_00001.parquet"] = 1
    dest = sources.download_file(f"{shards.url}/{sources.CLIMBMIX_REPO}/shard_00001.parquet",
                                 tmp_path / "shard_00001.parquet",
                                 backoff=0.01)
    assert dest.read_bytes() == shards.files["shard_00001.parquet"] and shards.hits["shard_00001.parquet"] == 2


def test_a_server_that_keeps_failing_leaves_nothing_behind(shards, tmp_path):
    folder = tmp_path / "downloads"
    folder.mkdir()
    shards.truncate["shard_00000.parquet"] = 99
    with pytest.raises(prepare.CacheError, match="could not download .*truncated"):
        sources.download_file(f"{sources.climbmix_base_url()}/shard_00000.parquet", folder / "shard_00000.parquet",
                              retries=3, backoff=0.01)
    assert leftovers(folder) == [] and shards.hits["shard_00000.parquet"] == 3
    shards.fail["shard_00001.parquet"] = 99
    with pytest.raises(prepare.CacheError, match="HTTP 503"):
        sources.download_file(f"{sources.climbmix_base_url()}/shard_00001.parquet", folder / "shard_00001.parquet",
                              retries=2, backoff=0.01)
    assert leftovers(folder) == []


def test_not_found_is_not_retried(shards, tmp_path):
    with pytest.raises(prepare.CacheError, match="HTTP 404"):
        sources.download_file(f"{sources.climbmix_base_url()}/shard_09999.parquet", tmp_path / "x.parquet",
                              backoff=0.01)
    assert shards.hits["shard_09999.parquet"] == 1


def test_corrupt_parquet_is_rejected(shards, tmp_path):
    shards.files["shard_00000.parquet"] = b"PAR1 this is not really a parquet file PAR1"
    folder = tmp_path / "downloads"
    folder.mkdir()
    with pytest.raises(prepare.CacheError, match="not a valid parquet"):
        sources.download_file(f"{sources.climbmix_base_url()}/shard_00000.parquet", folder / "s.parquet",
                              retries=2, backoff=0.01)
    assert leftovers(folder) == []


def test_climbmix_prepare_end_to_end_with_pinned_validation_shard(shards, tmp_path):
    cache = tmp_path / "cache"
    assert run_prepare(cache, "--source", "climbmix", "--num-shards", "2", "--profile", "tiny",
                       "--vocab-size", "300", "--eval-tokens", "2048") == 0
    manifest = prepare.load_manifest(cache)
    assert manifest["source"] == {"name": "climbmix", "num_shards": 2, "base_url": sources.climbmix_base_url()}
    assert manifest["documents"] == {"train": 300, "val": 150}
    tok = prepare.Tokenizer.from_directory(cache / "tokenizer")
    val_tokens, _ = prepare.load_split("val", cache)
    assert f"doc {sources.CLIMBMIX_VAL_SHARD}-" in tok.decode(val_tokens[:5000])
    train_text = tok.decode(prepare.load_split("train", cache)[0])
    assert f"doc {sources.CLIMBMIX_VAL_SHARD}-" not in train_text and "doc 1-149." in train_text
    assert sorted(leftovers(cache / "downloads")) == ["shard_00000.parquet", "shard_00001.parquet", "shard_06542.parquet"]
