"""A pod's application, unchanged by the mesh: plain HTTP/1.1 on 0.0.0.0:PORT,
answering every GET with JSON of what it saw (its name, the peer, the path, the
request headers). Binds as root, then runs as nobody, so that `weft init
--proxy-uid 0` captures nothing of the sidecar's and all of the application's."""

import http.server
import json
import os
import sys

PORT, NAME = int(sys.argv[1]), sys.argv[2]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = json.dumps(
            {
                "app": NAME,
                "peer": self.client_address[0],
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
print("listening", flush=True)
server.serve_forever()
