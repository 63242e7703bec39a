"""Bad input gets a one-line reason and the loop goes on (or stops cleanly): proposals that are not
valid text or that no compiler takes, a train.py that is not UTF-8 under `autoresearch experiment`,
answers from the Messages API that are not what they should be, a hung API call stopped by Ctrl-C,
a broken state file, a full disk, and a log that would not end.
Run: uv run pytest tests/test_bad_inputs.py"""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx2
import pytest

from autoresearch import ledger, runner, sandbox, state, workspace
from autoresearch.agents.claude import ClaudeAgent
from autoresearch.agents.replay import ReplayAgent
from autoresearch.judge import Policy
from autoresearch.scheduler import Scheduler, init_run
from fake_anthropic import message, tool
from lab_helpers import FAKE_TRAIN, check_invariants, cli, cli_env, make_repo, start_cli, variant, verdicts, write_replay
from test_claude_agent import KEY, agent_for, context
from test_lab import Quiet


@pytest.fixture
def repo(tmp_path, use_cache):
    return make_repo(tmp_path / "repo")


def test_proposals_no_compiler_takes_are_rejected_with_a_reason_and_a_restart_goes_on(repo, tmp_path):
    deep = "x = " + "(" * 100_000 + "1" + ")" * 100_000 + "\n"
    bad = [  # json carries the lone surrogate as \ud800
        {"description": "a lone surrogate \ud800 in its description", "train_py": FAKE_TRAIN + "# \ud800\n"},
        {"description": "a runaway expression", "train_py": FAKE_TRAIN + deep},
        {"description": "a null byte", "train_py": FAKE_TRAIN + "# \0\n"},
        {"description": "a diff with a lone surrogate", "diff": "--- a/train.py\n+++ b/train.py\n@@ \ud800\n"},
    ]
    replay = write_replay(tmp_path / "r.jsonl", bad)
    lab = Scheduler(init_run(repo, "b"), Policy(baseline_runs=1), display=Quiet())
    lab.run(ReplayAgent(replay))
    rows = verdicts(check_invariants(lab.workdir))
    assert [r["status"] for r in rows] == ["keep"] + ["rejected"] * 4
    reasons = [r["reason"] for r in rows[1:]]
    assert reasons[0].startswith("train.py is not valid text: surrogates not allowed at character")
    assert reasons[1].startswith("train.py does not compile")
    assert reasons[2].startswith("train.py does not compile")
    assert reasons[3].startswith("the diff is not valid text")
    assert rows[1]["description"] == "a lone surrogate ? in its description"
    # and the next loop on the run starts as any other
    again = Scheduler(lab.workdir, Policy(baseline_runs=1), display=Quiet())
    assert again.run(ReplayAgent(write_replay(tmp_path / "r2.jsonl", bad + [
        {"description": "better", "train_py": variant(WEIGHT=1.0)}]))) == 1
    assert verdicts(check_invariants(lab.workdir))[-1]["status"] == "keep"


def test_experiment_on_a_train_py_that_is_not_utf8_is_rejected_in_one_line(repo, use_cache):
    assert cli(repo, use_cache, "init", "--tag", "x").returncode == 0
    workdir = repo / "runs" / "x"
    (workdir / "train.py").write_bytes(FAKE_TRAIN.encode() + b"# \xff\xfe\n")
    out = cli(repo, use_cache, "experiment", "--tag", "x", "-m", "latin-1 bytes", "--baseline-runs", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Traceback" not in out.stderr and "not valid UTF-8" in out.stdout
    assert verdicts(ledger.read_rows(workdir / "results.tsv"))[-1]["status"] == "rejected"


def raw(*responses):
    """An httpx2 transport answering in order with (status, bytes, headers)."""
    queue = list(responses)

    def handle(request):
        status, body, headers = queue.pop(0) if len(queue) > 1 else queue[0]
        return httpx2.Response(status, content=body, headers=headers)
    return httpx2.MockTransport(handle)


def agent_on(transport, **kw):
    sleeps = []
    return ClaudeAgent(api_key=KEY, http_client=httpx2.Client(transport=transport), backoff=0.01,
                       sleep=sleeps.append, **kw), sleeps


def test_a_200_that_is_not_json_is_retried():
    good = json.dumps(message(tool("propose", {"description": "ok"}))).encode()
    agent, sleeps = agent_on(raw((200, b"<html>proxy error</html>", {"content-type": "application/json"}),
                                 (200, good, {"content-type": "application/json"})))
    assert agent.propose(context()).description == "ok" and len(sleeps) == 1


def test_a_negative_or_nonsense_retry_after_falls_back_to_backoff():
    overloaded = json.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "x"}}).encode()
    good = json.dumps(message(tool("propose", {"description": "ok"}))).encode()
    json_type = {"content-type": "application/json"}
    agent, sleeps = agent_on(raw((529, overloaded, {**json_type, "retry-after": "-1"}),
                                 (529, overloaded, {**json_type, "retry-after": "nan"}),
                                 (529, overloaded, {**json_type, "retry-after": "inf"}),
                                 (200, good, json_type)))
    assert agent.propose(context()).description == "ok"
    assert sleeps == [0.01, 0.02, 0.04]


def test_a_tool_input_with_a_lone_surrogate_is_a_tool_error_and_the_next_call_still_encodes():
    bad = json.dumps(message(tool("write_train", {"content": "x = 1\n"}))).replace("x = 1", "x = \\ud800")
    good = json.dumps(message(tool("write_train", {"content": "y = 2\n"}), tool("propose", {"description": "d"})))
    sent = []

    def handle(request):
        sent.append(json.loads(request.content))
        return httpx2.Response(200, content=(bad if len(sent) == 1 else good).encode(),
                               headers={"content-type": "application/json"})
    agent, _ = agent_on(httpx2.MockTransport(handle))
    proposal = agent.propose(context())
    assert proposal.train_py == "y = 2\n"
    result = sent[1]["messages"][-1]["content"][0]
    assert result["is_error"] and "not valid text" in result["content"]


def test_negative_token_counts_never_lower_the_cost():
    script_items = [message(tool("view_file", {"path": "train.py"}), input_tokens=1000, output_tokens=100),
                    message(tool("propose", {"description": "d"}), input_tokens=-5000, output_tokens=-700)]
    from fake_anthropic import Script
    agent, _ = agent_for(Script(script_items))
    usage = agent.propose(context()).usage
    assert usage["input_tokens"] == 1000 and usage["output_tokens"] == 100 and usage["cost_usd"] > 0


def test_ctrl_c_stops_the_loop_within_seconds_while_the_api_hangs(repo, tmp_path, use_cache):
    """A server that takes the request and answers one byte a second, never finishing."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    seen = threading.Event()

    def trickle():
        conn, _ = listener.accept()
        conn.recv(65536)
        seen.set()
        try:
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n")
            while True:
                conn.sendall(b" ")
                time.sleep(1)
        except OSError:
            pass
    threading.Thread(target=trickle, daemon=True).start()
    assert cli(repo, use_cache, "init", "--tag", "h").returncode == 0
    workdir = repo / "runs" / "h"
    proc = start_cli(repo, use_cache, "run", "--tag", "h", "--agent", "claude", "--baseline-runs", "1",
                     ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=f"http://127.0.0.1:{listener.getsockname()[1]}")
    try:
        assert seen.wait(120), "the agent never called the API"
        time.sleep(1)
        os.kill(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=15)  # not the 600 s of the client's timeout
    finally:
        if proc.poll() is None:
            proc.kill()
        listener.close()
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    rows = check_invariants(workdir)
    assert [r["status"] for r in verdicts(rows)] == ["keep"]  # the baseline; the proposal never was
    assert state.load(workdir)["experiments"] == []


def test_status_into_a_pipe_already_closed_says_nothing_and_ends_well(repo, use_cache):
    """`autoresearch status | head -1`: the reader may be gone before a line is written."""
    assert cli(repo, use_cache, "init", "--tag", "p").returncode == 0
    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "w") as closed:
        out = subprocess.run([sys.executable, "-m", "autoresearch.cli", "status", "--tag", "p"], cwd=repo,
                             env=cli_env(use_cache), stdout=closed, stderr=subprocess.PIPE, text=True, timeout=120)
    assert out.returncode == 0 and out.stderr == "", out.stderr


def test_a_broken_state_file_is_one_line_and_says_what_to_do(repo, use_cache):
    assert cli(repo, use_cache, "init", "--tag", "s").returncode == 0
    path = repo / "runs" / "s" / ".lab" / "state.json"
    for broken in ("", '{"best_commit": "ab', "[]"):
        path.write_text(broken)
        for command in (("status", "--tag", "s"), ("run", "--tag", "s", "--agent", "search")):
            out = cli(repo, use_cache, *command)
            assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
            assert "state.json is unreadable" in out.stderr and "autoresearch init --tag NEW" in out.stderr


def test_a_state_file_that_disagrees_with_git_is_refused_in_one_line(repo, use_cache):
    """What the lab can derive from git it does not take from its state file (an unsandboxed run could
    rewrite it): the protected hashes come from the base commit, and the best commit must descend from
    the base and differ from it in train.py alone."""
    assert cli(repo, use_cache, "init", "--tag", "s").returncode == 0
    workdir = repo / "runs" / "s"
    honest = state.load(workdir)
    (workdir / "prepare.py").write_text((workdir / "prepare.py").read_text() + "\n# a tweak to the metric\n")
    forged = dict(honest, protected=workspace.protected_hashes(workdir))  # the tweak, made to look protected
    subprocess.run(["git", *workspace.IDENTITY, "commit", "-qam", "tweak"], cwd=workdir, check=True)
    tweaked = workspace.head(workdir)
    subprocess.run(["git", "reset", "-q", "--hard", honest["base_commit"]], cwd=workdir, check=True)
    for bad, why in ((forged, "does not match its base commit"),
                     (dict(honest, best_commit=tweaked), "changes more than train.py of its base"),
                     (dict(honest, base_commit=tweaked, best_commit=tweaked), "does not match its base commit")):
        state.save(workdir, bad)
        out = cli(repo, use_cache, "run", "--tag", "s", "--agent", "search")
        assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
        assert why in out.stderr and "autoresearch init --tag NEW" in out.stderr, out.stderr
    state.save(workdir, honest)
    Scheduler(workdir, Policy(), display=Quiet()).make_executor().close()  # the honest state: accepted


@pytest.mark.skipif(sandbox.mode() != sandbox.BWRAP, reason="needs bubblewrap to make the worktree read-only")
def test_a_read_only_worktree_is_one_line_and_the_run_goes_on_once_it_is_writable(repo, use_cache):
    """The run's files on a read-only mount (a full or remounted disk fails the same way): bubblewrap
    binds the worktree read-only for the lab itself."""
    import shutil
    import subprocess
    import sys
    from lab_helpers import cli_env
    assert cli(repo, use_cache, "init", "--tag", "ro").returncode == 0
    workdir = repo / "runs" / "ro"
    jail = [shutil.which("bwrap"), "--unshare-user", "--cap-drop", "ALL", "--bind", "/", "/", "--dev", "/dev",
            "--proc", "/proc", "--ro-bind", str(workdir), str(workdir)]
    out = subprocess.run([*jail, sys.executable, "-m", "autoresearch.cli", "run", "--tag", "ro", "--agent", "search",
                          "--max-experiments", "1", "--baseline-runs", "1"],
                         cwd=repo, env=cli_env(use_cache, AUTORESEARCH_SANDBOX="0"), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "Read-only file system" in out.stderr and "run the same command again" in out.stderr
    out = cli(repo, use_cache, "run", "--tag", "ro", "--agent", "search", "--max-experiments", "1",
              "--baseline-runs", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert [r["status"] for r in verdicts(check_invariants(workdir))][:1] == ["keep"]


def test_a_log_that_would_not_end_is_capped_and_keeps_its_summary(tmp_path, use_cache, monkeypatch):
    monkeypatch.setattr(runner, "LOG_CAP", 200_000)
    text = FAKE_TRAIN.replace("tok = Tokenizer.from_directory()",
                              "for i in range(40000): print('spam line', i, 'x' * 40)\n"
                              "tok = Tokenizer.from_directory()", 1)
    repo = make_repo(tmp_path / "spam", text)
    lab = Scheduler(init_run(repo, "l"), Policy(baseline_runs=1), display=Quiet())
    lab.run(ReplayAgent(write_replay(tmp_path / "r.jsonl", [])))
    log = next((lab.workdir / "logs").glob("0001-*.log"))
    content = log.read_text()
    assert log.stat().st_size < 250_000 and "# log capped at 200,000 bytes" in content
    assert "val_bpb:" in content.split("# log capped", 1)[1]  # the summary block is kept
    assert verdicts(check_invariants(lab.workdir))[0]["status"] == "keep"
