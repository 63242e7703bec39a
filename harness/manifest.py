"""The prepared cache: its profiles, its manifest and its hashes. Standard library only: the lab
imports this module (it never imports torch), and prepare.py reads its constants through it."""
import hashlib
import json
import os
from pathlib import Path

PROFILES = {
    # the original project's numbers, for one H100-class GPU
    "h100": dict(max_seq_len=2048, vocab_size=8192, eval_tokens=40 * 524288, time_budget=300),
    # a consumer GPU or Apple silicon
    "small": dict(max_seq_len=1024, vocab_size=8192, eval_tokens=4 * 524288, time_budget=300),
    # a CPU laptop, a workshop, CI
    "tiny": dict(max_seq_len=256, vocab_size=4096, eval_tokens=2**16, time_budget=60),
}
MANIFEST_FORMAT = 1
CONSTANTS = ("MAX_SEQ_LEN", "VOCAB_SIZE", "EVAL_TOKENS", "TIME_BUDGET")  # what train.py imports, with PROFILE


class CacheError(RuntimeError):
    """The prepared cache is missing, broken or of another kind than asked for."""


def cache_dir(cache=None) -> Path:
    """The cache folder: the one given, else AUTORESEARCH_CACHE, else ~/.cache/autoresearch."""
    return Path(cache or os.environ.get("AUTORESEARCH_CACHE") or "~/.cache/autoresearch").expanduser()


def prepare_hint(profile="tiny", source="python"):
    return f"run `uv run prepare.py --source {source} --profile {profile}`"


def load_manifest(directory=None) -> dict:
    """Read and sanity-check the manifest of a prepared cache; CacheError says how to fix it."""
    directory = cache_dir(directory)
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
        [manifest["constants"][k] for k in CONSTANTS], manifest["profile"], manifest["source"]["name"]
        manifest["data_hash"]
    except (OSError, KeyError, TypeError, ValueError) as e:
        source = manifest.get("source") if isinstance(manifest, dict) else None
        hint = prepare_hint(manifest.get("profile", "tiny"), source.get("name", "python")) \
            if isinstance(source, dict) else prepare_hint()
        raise CacheError(f"the cache in {directory} is broken ({e}): {hint} --force") from None
    return manifest


def constants_asked(manifest):
    """A manifest's constants as they were asked for, before any was lowered to fit the corpus."""
    return {**manifest["constants"], **manifest.get("lowered", {})}


def validation_files(manifest: dict) -> list[str]:
    """The cache's files that hold the validation split: the lab's evaluator reads them, no experiment does."""
    return sorted(name for name in manifest["files"] if Path(name).name.startswith("val"))


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


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def combined_hash(hashes):
    return hashlib.sha256("".join(hashes).encode()).hexdigest()
