"""The guest tier's command agent: lets a test on the host drive a QEMU guest.

A guest of the tier runs one command and powers off when it ends
(deploy/guest/run.sh). For a scenario that alternates between the two sides
(start the gateway in the guest, ping from the host, signal the gateway,
look at the guest's links), the guest's command is this agent: it listens on
TCP (--listen ADDR:PORT, on the guest's NIC) and answers one JSON request per
line with one JSON reply per line:

  {"op": "exec", "argv": [...], "timeout": S}
      runs argv to completion → {"status": N, "out": "stdout+stderr"}
      (status 124 and whatever was printed when it outlived S seconds)
  {"op": "spawn", "name": N, "argv": [...]}
      starts argv in the background, output to /tmp/N.log → {"pid": P}
  {"op": "signal", "name": N, "signal": SIG}  → {}
  {"op": "wait", "name": N, "timeout": S}
      → {"status": N or null while it runs, "out": its log so far}
  {"op": "write", "path": P, "data": TEXT}    writes a file (under /tmp, /run)
  {"op": "quit"}   → {} and the agent exits 0 (the guest powers off)

Any failure of a request is a reply {"error": "..."}; the agent never dies of
one. It is a test fixture inside a throw-away guest on a private link, so it
runs what it is asked to, as root. Standard library only.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys

children = {}


def run(req):
    op = req.get("op")
    if op == "exec":
        try:
            p = subprocess.run(
                req["argv"],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=req.get("timeout", 60),
            )
            return {"status": p.returncode, "out": p.stdout.decode(errors="replace")}
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode(errors="replace")
            return {"status": 124, "out": out}
    if op == "spawn":
        name = req["name"]
        log = open(f"/tmp/{name}.log", "wb")
        p = subprocess.Popen(req["argv"], stdout=log, stderr=subprocess.STDOUT)
        children[name] = p
        return {"pid": p.pid}
    if op == "signal":
        children[req["name"]].send_signal(int(req["signal"]))
        return {}
    if op == "wait":
        p = children[req["name"]]
        try:
            status = p.wait(timeout=max(float(req.get("timeout", 0)), 0.001))
        except subprocess.TimeoutExpired:
            status = None
        with open(f"/tmp/{req['name']}.log", errors="replace") as f:
            out = f.read()
        if status is not None and status < 0:
            status = 128 - status  # killed by a signal: the shell's convention
        return {"status": status, "out": out}
    if op == "write":
        with open(req["path"], "w") as f:
            f.write(req["data"])
        return {}
    raise ValueError(f"unknown op {op!r}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True, help="ADDR:PORT")
    args = ap.parse_args()
    host, port = args.listen.rsplit(":", 1)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, int(port)))
    srv.listen(4)
    print(f"guest_agent: listening on {args.listen}", flush=True)
    while True:
        conn, _ = srv.accept()
        with conn, conn.makefile("rwb") as f:
            for line in f:
                try:
                    req = json.loads(line)
                    if req.get("op") == "quit":
                        f.write(b"{}\n")
                        f.flush()
                        for p in children.values():
                            if p.poll() is None:
                                p.kill()
                        sys.exit(0)
                    reply = run(req)
                except Exception as e:  # a bad request is answered, never fatal
                    reply = {"error": f"{type(e).__name__}: {e}"}
                f.write(json.dumps(reply).encode() + b"\n")
                f.flush()


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    main()
