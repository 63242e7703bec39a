"""Token shards (documents tokenized once at prepare time, each prefixed with BOS) packed into rows
that each start with BOS, with no padding: for training batches and for the fixed evaluation rows."""
from bisect import bisect_right

import numpy as np

from harness.manifest import cache_dir, load_manifest


def load_split(split, directory=None):
    """(tokens, offsets) of one split: document i is tokens[offsets[i]:offsets[i+1]], BOS first."""
    assert split in ("train", "val"), f"split must be 'train' or 'val', not {split!r}"
    directory = cache_dir(directory)
    manifest = load_manifest(directory)
    data = directory / "data"
    dtype = np.dtype(manifest["token_dtype"])
    tokens = np.memmap(data / f"{split}.bin", dtype=dtype, mode="r")
    offsets = np.load(data / f"{split}_offsets.npy", allow_pickle=False)
    return tokens, offsets


class Packer:
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


def validation_packer(tokens, offsets, bos):
    """The validation documents in their pinned order, packed into rows once, with no wrap-around."""
    return Packer(tokens, offsets, bos, lambda e: np.arange(len(offsets) - 1), wrap=False)


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
