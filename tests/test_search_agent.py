"""The offline search agent: safe reading of the hyperparameter block, narrow edits, use of history."""
import re
from pathlib import Path

import pytest

from autoresearch.agents.base import Context
from autoresearch.agents.search import PROTECTED, SearchAgent, parse_block

TRAIN_PY = (Path(__file__).resolve().parents[1] / "train.py").read_text()
HASH = re.compile(r"\[s:([0-9a-f]{8})\]$")


def propose(seed=0, history=(), profile="tiny", train_py=TRAIN_PY):
    context = Context(train_py=train_py, program_md="", history=list(history), profile=profile)
    return SearchAgent(seed=seed).propose(context)


def row(description, status="discard", val_bpb=""):
    return {"status": status, "description": description, "val_bpb": val_bpb, "agent": "search"}


def changed_lines(old, new):
    """Indices of the lines that differ; the line count must not change."""
    a, b = old.splitlines(keepends=True), new.splitlines(keepends=True)
    assert len(a) == len(b)
    return [i for i, (x, y) in enumerate(zip(a, b)) if x != y]


def moved_names(description):
    return re.findall(r"([A-Z][A-Z0-9_]*) \S.*? -> ", HASH.sub("", description))


def values_of(text, profile="tiny"):
    return parse_block(text, profile)[0]


def test_values_evaluate_per_profile():
    tiny, small, h100 = (values_of(TRAIN_PY, p) for p in ("tiny", "small", "h100"))
    assert (tiny["DEPTH"], small["DEPTH"], h100["DEPTH"]) == (2, 6, 8)
    assert (tiny["HEAD_DIM"], small["HEAD_DIM"], h100["HEAD_DIM"]) == (64, 128, 128)
    assert (tiny["TOTAL_BATCH_SIZE"], h100["TOTAL_BATCH_SIZE"]) == (2**12, 2**19)
    assert h100["WINDOW_PATTERN"] == "SSSL" and tiny["WINDOW_PATTERN"] == "L"
    assert tiny["ADAM_BETAS"] == (0.8, 0.95) and tiny["MATRIX_LR"] == 0.04
    assert tiny["FINAL_EVAL_BATCH_SIZE"] == tiny["DEVICE_BATCH_SIZE"] == 16
    assert "SEED" not in tiny  # int(os.environ...) is not evaluated, and so never touched


def test_same_seed_same_proposal_and_seeds_differ():
    history = [row("MATRIX_LR 0.04 -> 0.056 [s:00000000]", "keep")]
    first, second = propose(3, history), propose(3, history)
    assert first.description == second.description and first.train_py == second.train_py
    descriptions = {propose(seed).description for seed in range(8)}
    assert len(descriptions) >= 5


@pytest.mark.parametrize("profile", ["tiny", "small", "h100"])
def test_only_the_moved_lines_change_and_the_file_compiles(profile):
    for seed in range(25):
        proposal = propose(seed, profile=profile)
        compile(proposal.train_py, "train.py", "exec")
        old_lines, new_lines = TRAIN_PY.splitlines(), proposal.train_py.splitlines()
        names = moved_names(proposal.description)
        assert 1 <= len(names) <= 3  # one or two moves; a halved batch also halves DEVICE_BATCH_SIZE
        changed = changed_lines(TRAIN_PY, proposal.train_py)
        assert sorted(new_lines[i].split(" = ")[0] for i in changed) == sorted(names)
        before, after = values_of(TRAIN_PY, profile), values_of(proposal.train_py, profile)
        for i in changed:
            name = new_lines[i].split(" = ")[0]
            assert name not in PROTECTED
            assert after[name] != before[name]
            comment = old_lines[i].partition("#")[2]
            assert new_lines[i].endswith(comment)  # the trailing comment survives
        assert {k for k in before if before[k] != after[k]} - {"FINAL_EVAL_BATCH_SIZE"} == set(names)
        assert proposal.description.endswith("]") and "\n" not in proposal.description


def test_description_names_the_old_and_new_values():
    proposal = propose(0)
    before, after = values_of(TRAIN_PY), values_of(proposal.train_py)
    for part in re.split(r", (?=[A-Z][A-Z0-9_]* )", HASH.sub("", proposal.description)):  # tuples hold ", "
        if " -> " in part:
            name = part.split(" ")[0]
            assert str(before[name]).replace("'", '"') in part or repr(before[name]) in part
            assert after[name] != before[name]


def test_protected_lines_never_change():
    protected = [line for line in TRAIN_PY.splitlines() if line.split(" = ")[0] in PROTECTED]
    assert len(protected) == 3
    history = []
    for seed in range(40):
        proposal = propose(seed, history)
        for line in protected:
            assert line in proposal.train_py.splitlines()
        history.append(row(proposal.description))


def test_tried_settings_are_not_repeated():
    history, hashes = [], []
    for _ in range(30):
        proposal = propose(0, history)
        assert proposal is not None
        hashes.append(HASH.search(proposal.description).group(1))
        history.append(row(proposal.description))
    assert len(set(hashes)) == 30


def test_a_kept_direction_is_favoured():
    kept = [row("MATRIX_LR 0.04 -> 0.056 [s:1234abcd]", "keep", "1.5")]
    # the loop would now hand over the kept train.py: MATRIX_LR is 0.056
    train_py = TRAIN_PY.replace("MATRIX_LR = 0.04 ", "MATRIX_LR = 0.056")
    assert "MATRIX_LR = 0.056" in train_py

    def increases(history):
        count = 0
        for seed in range(200):  # enough draws that the test does not hinge on a few of them
            proposal = propose(seed, history, train_py=train_py)
            match = re.search(r"MATRIX_LR (\S+) -> ([0-9.e-]+)", proposal.description)
            count += bool(match and float(match.group(2)) > float(match.group(1)))
        return count

    with_keep, without = increases(kept), increases([])
    assert with_keep >= 2 * max(without, 5)


def test_discarded_directions_are_sampled_less():
    bad = [row(f"WARMUP_RATIO 0.0 -> {v} [s:0000000{i}]", "discard") for i, v in enumerate((0.02, 0.05, 0.1))]
    bad = bad * 3
    hits = sum("WARMUP_RATIO" in propose(seed, bad).description for seed in range(300))
    base = sum("WARMUP_RATIO" in propose(seed).description for seed in range(300))
    assert base >= 10 and hits < base / 2


def test_batch_moves_keep_train_py_assert_true():
    history, text = [], TRAIN_PY
    for seed in range(80):
        proposal = propose(seed, history, train_py=text)
        values = values_of(proposal.train_py)
        assert values["DEVICE_BATCH_SIZE"] >= 1
        assert values["TOTAL_BATCH_SIZE"] % (values["DEVICE_BATCH_SIZE"] * 256) == 0
        history.append(row(proposal.description, "keep" if "BATCH" in proposal.description else "discard"))
        if "TOTAL_BATCH_SIZE" in proposal.description:
            text = proposal.train_py  # accept batch moves, so the search walks the batch around


def test_a_batch_only_walk_couples_and_stops_at_one_row():
    text = ("# Hyperparameters\n# ---\nTOTAL_BATCH_SIZE = 2**12 if PROFILE == 'tiny' else 2**19\n"
            "DEVICE_BATCH_SIZE = 16  # rows\nFINAL_EVAL_BATCH_SIZE = DEVICE_BATCH_SIZE\n# ---\n")
    history, rows_seen, coupled = [], set(), 0
    for seed in range(40):
        proposal = propose(seed, history, train_py=text)
        assert proposal is not None
        values = values_of(proposal.train_py)
        total, rows = values["TOTAL_BATCH_SIZE"], values["DEVICE_BATCH_SIZE"]
        assert rows >= 1 and total % (rows * 256) == 0 and total & (total - 1) == 0
        assert values["FINAL_EVAL_BATCH_SIZE"] == rows
        assert "FINAL_EVAL_BATCH_SIZE = DEVICE_BATCH_SIZE" in proposal.train_py
        coupled += "DEVICE_BATCH_SIZE" in proposal.description
        rows_seen.add(rows)
        history.append(row(proposal.description, "keep"))
        text = proposal.train_py
    assert coupled >= 2 and min(rows_seen) >= 1


def test_halving_the_batch_halves_device_rows_when_needed():
    # tiny: 4096 tokens = 16 rows x 256: halving the total must halve the rows too
    history, found = [], None
    for seed in range(200):
        proposal = propose(seed, history)
        if proposal.description.startswith("TOTAL_BATCH_SIZE 4096 -> 2048"):
            found = proposal
            break
    assert found is not None, "no halving proposed in 200 seeds"
    assert "DEVICE_BATCH_SIZE 16 -> 8" in found.description
    assert values_of(found.train_py)["FINAL_EVAL_BATCH_SIZE"] == 8  # re-evaluated, line untouched


def test_unknown_statuses_and_odd_rows_do_not_crash():
    history = [row("something else entirely", "weird"), row("", ""), {"status": None, "description": None},
               row("MATRIX_LR 0.04 -> 0.056 [s:zzzz]", "other"), row("DEPTH 2 -> (((", "keep"),
               {"description": "ADAM_BETAS (0.8, 0.95) -> (0.9, 0.95), DEPTH 2 -> 3 [s:abcdef01]"}]
    proposal = propose(1, history)
    assert proposal is not None
    compile(proposal.train_py, "train.py", "exec")


def test_a_sparse_block_still_works_and_runs_out():
    sparse = ("import os\nPROFILE = 'tiny'\n# ---\n# Hyperparameters\n# ---\n"
              "SEED = int(os.environ.get('X', '1'))\n"
              "SOFTCAP = 15.0 if PROFILE == 'tiny' else 30.0  # cap\n"
              "NOT_A_KNOWN_NAME = 3\n"
              "# ---\n# Model\n# ---\nprint(SOFTCAP)\n")
    history, seen = [], set()
    for _ in range(3):
        proposal = propose(0, history, train_py=sparse)
        assert proposal is not None
        assert re.fullmatch(r"SOFTCAP 15\.0 -> \d+\.0 \[s:[0-9a-f]{8}\]", proposal.description)
        [index] = changed_lines(sparse, proposal.train_py)
        assert proposal.train_py.splitlines()[index].endswith("  # cap")
        seen.add(proposal.description)
        history.append(row(proposal.description))
    assert len(seen) == 3
    assert propose(0, history, train_py=sparse) is None  # 10, 20, 30 all tried: nothing left


def test_exhausted_singles_fall_back_to_pairs():
    small = ("# Hyperparameters\n# ---\nDEPTH = 2\nSOFTCAP = 15.0\n# ---\n")
    history = []
    for _ in range(5):  # DEPTH 1 and 3, SOFTCAP 10, 20, 30 as single moves (in some order, maybe pairs)
        history.append(row(propose(0, history, train_py=small).description))
    singles = {"DEPTH 2 -> 1", "DEPTH 2 -> 3", "SOFTCAP 15.0 -> 10.0", "SOFTCAP 15.0 -> 20.0",
               "SOFTCAP 15.0 -> 30.0"}
    while singles - {HASH.sub("", r["description"]).strip() for r in history}:
        history.append(row(propose(0, history, train_py=small).description))
        assert len(history) < 30
    proposal = propose(0, history, train_py=small)
    assert len(moved_names(proposal.description)) == 2


def test_no_header_means_no_proposal():
    assert propose(0, train_py="DEPTH = 2\n") is None
