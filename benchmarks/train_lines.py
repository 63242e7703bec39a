"""How much of train.py is research (model, optimizer, schedule, loop) and how much plumbing (its
docstring, imports, the machine's set-up, start-up timing and prints, the summary), in code lines
(blank and comment lines left out). Run: uv run python benchmarks/train_lines.py [path/to/train.py]"""
import re
import sys
from pathlib import Path

PLUMBING = re.compile(r"^(import|from) |machine = Machine\(\)|^device, autocast|provenance|^t_\w+ = time|"
                      r"startup:|budget \{|^print\(f\"model:|f\"\{num_params|machine\.summary|^\s+\w+=.*(t_start|"
                      r"PROFILE\)|steady_tokens_per_s|first_step_seconds=)|^steady_tokens|^timed_steps|"
                      r"optimizer and first batch|f\"\{DEVICE_BATCH_SIZE\}x")


# whole blocks that are plumbing, as an older train.py had them: sections by their header, functions by name
SECTIONS = re.compile(r"^# (Device and precision|Provenance)")
FUNCTIONS = re.compile(r"^def (banner|run_eagerly|compiler_failed|compiled_or_eager)\(")


def blocks(lines: list[str]) -> set[int]:
    """The line numbers inside plumbing sections and functions (and the compile fallback's try block)."""
    inside, where = set(), None
    for i, line in enumerate(lines):
        if SECTIONS.match(line) or FUNCTIONS.match(line):
            where = "section" if line.startswith("#") else "function"
        elif where == "section" and i and lines[i - 1].startswith("# ---") and line.startswith("# "):
            where = None  # the next section's header
        elif where == "function" and line and not line[0].isspace() and not line.startswith(("def", "@")):
            where = None
        elif where == "function" and FUNCTIONS.match(line) is None and line.startswith("def "):
            where = None
        if where or "not compiler_failed(e)" in line:
            inside.add(i)
    return inside


def shares(text: str) -> tuple[int, int]:
    lines = text.splitlines()
    docstring_end = [i for i, line in enumerate(lines) if line.startswith('"""')][1]
    code = [(i, line) for i, line in enumerate(lines) if line.strip() and not line.strip().startswith("#")]
    inside = blocks(lines)
    plumbing = sum(1 for i, line in code if i <= docstring_end or i in inside or PLUMBING.search(line))
    return len(code), plumbing


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "train.py")
    total, plumbing = shares(path.read_text())
    print(f"{path}: {total} code lines, {plumbing} plumbing, {100 * (total - plumbing) / total:.0f} % research")
