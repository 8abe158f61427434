"""A one-invocation Lambda Runtime API and @connections recorder, for the image test.

Usage: runtime_api.py PORT RESULT_FILE HANDLER. Serves one event on /next (with the request-id,
deadline, function-ARN and trace-id headers): for `post`, the welcome event exactly as the
EventBridge rule hands it over; for the others, an API Gateway $default message. Records the
function's response and its @connections posts, then writes what it saw as JSON to the result
file and exits.
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, result_path, handler = int(sys.argv[1]), sys.argv[2], sys.argv[3]
now = int(time.time() * 1000)
CONNECTION_ID = "L0SM9cOFvHcCIhw="
MESSAGE = {
    "requestContext": {
        "routeKey": "$default", "eventType": "MESSAGE", "connectionId": CONNECTION_ID,
        "stage": "test", "requestId": "r", "messageId": "m", "connectedAt": now, "requestTimeEpoch": now,
        "domainName": "abc.execute-api.eu-west-1.amazonaws.com", "apiId": "abc", "messageDirection": "IN",
        "identity": {"sourceIp": "203.0.113.7"},
    },
    "body": "hello from the image test",
    "isBase64Encoded": False,
}
WELCOME = {
    "version": "0", "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718", "detail-type": "welcome",
    "source": "webchat", "account": "123456789012", "time": "2026-11-28T07:00:00Z",
    "region": "eu-west-1", "resources": [],
    "detail": {"connectionId": CONNECTION_ID, "message": f"Welcome! - connected on {CONNECTION_ID}"},
}
EVENT = WELCOME if handler == "post" else MESSAGE
seen = {"responded": False, "response": None, "errors": [], "posts": []}
handed_out = threading.Event()
done = threading.Event()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/2018-06-01/runtime/invocation/next":
            if handed_out.is_set():
                done.wait(60)  # one invocation only: hold the next poll
                return self.reply(500)
            handed_out.set()
            return self.reply(200, json.dumps(EVENT).encode(), [
                ("lambda-runtime-aws-request-id", "image-test-1"),
                ("lambda-runtime-deadline-ms", str(int(time.time() * 1000) + 30000)),
                ("lambda-runtime-invoked-function-arn", f"arn:aws:lambda:eu-west-1:123456789012:function:webchat-{handler}"),
                ("lambda-runtime-trace-id", "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"),
            ])
        self.reply(404)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
        if self.path.endswith("/response"):
            seen["responded"] = True
            seen["response"] = json.loads(body)
            self.reply(202)
            done.set()
        elif self.path.endswith("/error"):
            seen["errors"].append(body)
            self.reply(202)
            done.set()
        elif "/@connections/" in self.path:
            seen["posts"].append({"path": self.path, "body": body})
            self.reply(200)
        else:
            self.reply(404)


server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
done.wait(120)
time.sleep(0.2)
with open(result_path, "w") as result:
    json.dump(seen, result)
