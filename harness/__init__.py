"""The fixed harness behind prepare.py, in parts found by name (all protected, checked like prepare.py):

- manifest: the prepared cache's profiles, manifest and hashes (no torch: the lab imports it);
- sources: where documents come from (this machine's Python, your files, climbmix) and their splits;
- tokenizer: the BPE tokenizer, trained and stored without pickle;
- packing: token shards packed into rows that start with BOS, for training and for the fixed evaluation;
- build: the one-time preparation, `prepare(profile=..., source=...)`, and the CLI `uv run prepare.py`;
- machine: what train.py asks of the device: precision, compilation with its fallback, provenance, MFU.
"""
