"""Free loopback ports for the servers a bench script starts.

Usage: python3 -m report.ports COUNT LOW HIGH WHAT
prints the first of COUNT consecutive ports, all free on 127.0.0.1, at random
between LOW and HIGH, or fails naming WHAT they were for.
"""

import random
import socket
import sys


def free_range(count, low, high):
    """The first of `count` consecutive free ports in [low, high), or None."""
    for _ in range(1000):
        base = random.randrange(low, high - count)
        sockets = []
        try:
            for port in range(base, base + count):
                listener = socket.socket()
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sockets.append(listener)
                listener.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for listener in sockets:
                listener.close()
        return base
    return None


def main(arguments):
    count, low, high, what = int(arguments[0]), int(arguments[1]), int(arguments[2]), arguments[3]
    base = free_range(count, low, high)
    if base is None:
        sys.exit(f"no free ports for {what} between {low} and {high}")
    print(base)


if __name__ == "__main__":
    main(sys.argv[1:])
