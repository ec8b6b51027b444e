"""The sandbox Internet's web server: serve DIRECTORY on ADDRESS:PORT.

`python3 -m http.server` would call socket.getfqdn(ADDRESS) at start, a reverse DNS query to
the machine's resolver, which the namespace cannot reach (10 s lost, packets looping in the
lab). This one skips that lookup and otherwise is the standard library server.
Usage: python3 internet_http.py ADDRESS PORT DIRECTORY
"""
import functools
import socketserver
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


class Server(ThreadingHTTPServer):
    def server_bind(self):
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


def main(address: str, port: str, directory: str) -> None:
    handler = functools.partial(SimpleHTTPRequestHandler, directory=directory)
    with Server((address, int(port)), handler) as httpd:
        print(f"serving {directory} on {address}:{port}", flush=True)
        httpd.serve_forever()


if __name__ == "__main__":
    main(*sys.argv[1:])
