"""--agent claude against a fake Messages API: tool use over several turns, hostile and malformed
tool calls, retries, a storm of overload errors that pauses the loop, cost accounting, and the API
key kept away from train.py and the logs.  Run: uv run pytest tests/test_claude_agent.py"""

import httpx2
import pytest

from autoresearch.agents import AgentUnavailable, Context
from autoresearch.agents.claude import DEFAULT_MODEL, ClaudeAgent, price
from autoresearch.judge import Policy
from autoresearch.scheduler import Scheduler, init_run
from autoresearch.workspace import LabError
from fake_anthropic import Script, Server, error, message, text, tool
from lab_helpers import FAKE_TRAIN, check_invariants, cli, make_repo, verdicts
from test_lab import Quiet

KEY = "sk-ant-test-0123456789abcdef"


def agent_for(script, **kw):
    sleeps = []
    agent = ClaudeAgent(api_key=KEY, http_client=httpx2.Client(transport=script.transport()), backoff=0.01,
                        sleep=sleeps.append, **kw)
    return agent, sleeps


def context(**kw):
    return Context(train_py=FAKE_TRAIN, program_md="# the manual\nbe bold", profile="tiny", **kw)


def test_a_multi_turn_tool_use_proposal():
    script = Script([
        message(text("Let me look first."), tool("view_file", {"path": "train.py"})),
        message(tool("edit_train", {"old_str": "WEIGHT = 0.5", "new_str": "WEIGHT = 1.0"})),
        message(tool("propose", {"description": "use the full unigram weight"})),
    ])
    agent, _ = agent_for(script)
    proposal = agent.propose(context(history=[{"status": "keep", "val_bpb": "3.1", "description": "baseline",
                                               "lines_added": "0", "lines_removed": "0", "reason": ""}]))
    assert proposal.description == "use the full unigram weight"
    assert "WEIGHT = 1.0" in proposal.train_py and "WEIGHT = 0.5" not in proposal.train_py
    first, second, third = (r["body"] for r in script.requests)
    assert first["model"] == DEFAULT_MODEL and {t["name"] for t in first["tools"]} >= {"edit_train", "propose"}
    assert first["system"][0]["cache_control"] == {"type": "ephemeral"} and "be bold" in first["system"][0]["text"]
    assert "WEIGHT = 0.5" in first["messages"][0]["content"][0]["text"]  # the current train.py, cached
    assert "baseline" in first["messages"][0]["content"][1]["text"]     # the compact history
    result = second["messages"][-1]["content"][0]
    assert result["type"] == "tool_result" and "WEIGHT = 0.5" in result["content"]
    assert third["messages"][-1]["content"][0]["content"] == "edited"
    assert script.requests[0]["headers"]["authorization"] == f"Bearer {KEY}"


def test_hostile_and_malformed_tool_calls_become_tool_errors():
    script = Script([
        message(tool("write_file", {"path": "prepare.py", "content": "evil"}),
                tool("view_file", {"path": "../../etc/passwd"}),
                tool("edit_train", {"old_str": "import", "new_str": "x"}),
                tool("edit_train", {"old_str": "no such text", "new_str": "x"}),
                tool("edit_train", {"old_str": 42, "new_str": None}),
                tool("insert_train", {"line": 10**6, "text": "x"}),
                tool("write_train", {"content": "x" * 200_000}),
                tool("edit_train", {"wrong": "keys"}),
                tool("propose", {"description": "   "})),
        message(tool("write_train", {"content": "print('hello')\n"}), tool("propose", {"description": "rewrite"})),
    ])
    agent, _ = agent_for(script)
    proposal = agent.propose(context())
    assert proposal.train_py == "print('hello')\n" and proposal.description == "rewrite"
    results = script.requests[1]["body"]["messages"][-1]["content"]
    assert len(results) == 9 and all(r["is_error"] for r in results)
    joined = " ".join(r["content"] for r in results)
    for phrase in ("unknown tool 'write_file'", "cannot be viewed", "matches 0 times", "must be a string",
                   "line must be an integer", "the limit is", "missing argument", "describe the change"):
        assert phrase in joined
    assert "matches" in results[2]["content"] and "1 times" not in results[2]["content"]


def test_a_429_then_success_is_retried_with_its_retry_after():
    script = Script([error(429, "rate_limit_error", retry_after=7),
                     message(tool("write_train", {"content": "x = 1\n"}), tool("propose", {"description": "d"}))])
    agent, sleeps = agent_for(script)
    assert agent.propose(context()).train_py == "x = 1\n"
    assert sleeps == [7.0] and len(script.requests) == 2


def test_malformed_responses_are_retried():
    class Garbage(Script):
        def transport(self):
            calls = []

            def handle(request):
                calls.append(1)
                if len(calls) == 1:
                    return httpx2.Response(200, content=b"{this is not json")
                return httpx2.Response(200, json=message(tool("propose", {"description": "ok"})))
            return httpx2.MockTransport(handle)

    agent, sleeps = agent_for(Garbage([]))
    assert agent.propose(context()).description == "ok" and len(sleeps) == 1


def test_a_storm_of_overload_errors_makes_the_agent_unavailable():
    script = Script([error(529)])
    agent, sleeps = agent_for(script, retries=4)
    with pytest.raises(AgentUnavailable, match="HTTP 529"):
        agent.propose(context())
    assert len(script.requests) == 4 and sleeps == [0.01, 0.02, 0.04]


def test_a_refused_request_stops_with_a_clear_error():
    agent, _ = agent_for(Script([error(401, "authentication_error")]))
    with pytest.raises(LabError, match="refused the request \\(401\\)"):
        agent.propose(context())


def test_the_key_is_required(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(LabError, match="ANTHROPIC_API_KEY"):
        ClaudeAgent()


def test_usage_and_cost_are_summed_over_turns():
    script = Script([message(tool("view_file", {"path": "program.md"}), input_tokens=1000, output_tokens=100,
                             cache_write=5000),
                     message(tool("write_train", {"content": "y = 2\n"}), tool("propose", {"description": "d"}),
                             input_tokens=2000, output_tokens=300, cache_read=5000)])
    agent, _ = agent_for(script, model="claude-sonnet-5-5")
    u = agent.propose(context()).usage  # the usage travels on the proposal
    assert (u["input_tokens"], u["output_tokens"], u["cache_write_tokens"], u["cache_read_tokens"]) == (3000, 400, 5000, 5000)
    p_in, p_out = price("claude-sonnet-5-5")
    assert u["cost_usd"] == pytest.approx((3000 * p_in + 400 * p_out + 5000 * 1.25 * p_in + 5000 * 0.1 * p_in) / 1e6)


def test_the_loop_pauses_through_an_outage_and_records_cost(tmp_path, use_cache):
    repo = make_repo(tmp_path / "repo")
    better = FAKE_TRAIN.replace("WEIGHT = 0.5", "WEIGHT = 1.0")
    script = Script([error(529)] * 3 + [
        message(tool("write_train", {"content": better}), tool("propose", {"description": "full weight"}),
                input_tokens=4000, output_tokens=500),
        message(tool("propose", {"description": "again, unchanged"}), input_tokens=100, output_tokens=10),
    ])
    agent, _ = agent_for(script, retries=2)
    display = Quiet()
    lab = Scheduler(init_run(repo, "c"), Policy(baseline_runs=2), display=display, pause=0.05)
    lab.run(agent, max_experiments=3)
    rows = verdicts(check_invariants(lab.workdir))
    assert [r["status"] for r in rows] == ["keep", "keep", "rejected"]
    assert display.stream.getvalue().count("the agent is unavailable") == 1  # 3 errors, 2 per try: one pause
    assert rows[1]["agent"] == "claude" and rows[1]["input_tokens"] == "4000" and float(rows[1]["cost_usd"]) > 0
    assert rows[2]["reason"] == "train.py is unchanged: nothing to try" and rows[2]["input_tokens"] == "100"


def test_end_to_end_against_a_fake_messages_server(tmp_path, use_cache):
    repo = make_repo(tmp_path / "repo")
    better = FAKE_TRAIN.replace("WEIGHT = 0.5", "WEIGHT = 1.0")
    server = Server(Script([
        message(tool("edit_train", {"old_str": "WEIGHT = 0.5", "new_str": "WEIGHT = 1.0"})),
        message(text("done"), tool("propose", {"description": "full unigram"}), input_tokens=50000,
                output_tokens=2000),
    ]))
    try:
        assert cli(repo, use_cache, "init", "--tag", "e2e").returncode == 0
        out = cli(repo, use_cache, "run", "--agent", "claude", "--model", "claude-haiku-4-5", "--max-cost", "0.01",
                  "--baseline-runs", "2",
                  ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=server.url)
    finally:
        server.close()
    assert out.returncode == 0, out.stdout + out.stderr
    workdir = repo / "runs" / "e2e"
    rows = verdicts(check_invariants(workdir))
    assert [r["description"] for r in rows] == ["baseline", "full unigram"]
    assert rows[1]["status"] == "keep" and (workdir / "train.py").read_text() == better
    assert float(rows[1]["cost_usd"]) >= 0.01 and "spent $" in out.stdout  # --max-cost stopped the loop
    assert server.script.requests[0]["body"]["model"] == "claude-haiku-4-5"
    # the key reached the API, and nowhere else
    assert server.script.requests[0]["headers"]["Authorization"] == f"Bearer {KEY}"
    for path in workdir.rglob("*"):
        if path.is_file() and ".git" not in path.parts:
            assert KEY not in path.read_text(errors="replace"), path
    assert "secret visible: False" in next((workdir / "logs").glob("0001-*.log")).read_text()
    assert KEY not in out.stdout + out.stderr
