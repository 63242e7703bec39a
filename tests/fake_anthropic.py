"""A scripted stand-in for the Anthropic Messages API, at the network edge only: as an
httpx2.MockTransport for in-process tests, and as a real HTTP server on loopback for end-to-end runs
reached through ANTHROPIC_BASE_URL."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx2


def message(*blocks, input_tokens=1000, output_tokens=200, cache_read=0, cache_write=0):
    return {"id": "msg_test", "type": "message", "role": "assistant", "model": "claude-test", "content": list(blocks),
            "stop_reason": "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                      "cache_read_input_tokens": cache_read, "cache_creation_input_tokens": cache_write}}


def tool(name, args, id=None):
    tool.counter = getattr(tool, "counter", 0) + 1
    return {"type": "tool_use", "id": id or f"toolu_{tool.counter:04d}", "name": name, "input": args}


def text(t):
    return {"type": "text", "text": t}


def error(status, kind="overloaded_error", retry_after=None):
    return {"status": status, "body": {"type": "error", "error": {"type": kind, "message": kind}},
            "headers": {"retry-after": str(retry_after)} if retry_after is not None else {}}


class Script:
    """Answers requests in order: each item is a message dict, or an error() dict; the last repeats."""

    def __init__(self, items):
        self.items, self.requests = list(items), []

    def next(self, body, headers):
        self.requests.append({"body": body, "headers": headers})
        item = self.items.pop(0) if len(self.items) > 1 else self.items[0]
        if "status" in item:
            return item["status"], item["body"], item["headers"]
        return 200, item, {}

    def transport(self):
        def handle(request):
            status, body, headers = self.next(json.loads(request.content), dict(request.headers))
            return httpx2.Response(status, json=body, headers=headers)
        return httpx2.MockTransport(handle)


class Server:
    """The same script behind a real HTTP server on 127.0.0.1."""

    def __init__(self, script):

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, payload, headers = script.next(body, dict(self.headers))
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.script = script
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
