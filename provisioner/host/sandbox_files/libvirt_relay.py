"""Join this process's stdin/stdout to a unix socket (the forced command of a vnet sandbox
host's SSH server: a qemu+ssh:// session reaches that host's libvirtd, as `nc -U` would).
Run as `python3 -I THIS SOCKET`; stdlib only."""
import os
import selectors
import socket
import sys


def main(path: str) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ, "in")
    sel.register(sock, selectors.EVENT_READ, "sock")
    while True:
        for key, _ in sel.select():
            if key.data == "in":
                data = os.read(0, 65536)
                if not data:
                    return
                sock.sendall(data)
            else:
                data = sock.recv(65536)
                if not data:
                    return
                while data:
                    data = data[os.write(1, data):]

if __name__ == "__main__":
    main(sys.argv[1])
