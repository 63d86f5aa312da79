#!/usr/bin/env python3
"""Ping round trips from Python, for `freeze-bench --footprint`: the agent through grpcio
(one channel, what a Python host integrator writes; stubs generated from the project's
.proto by tests/clients/python/guest_client.py's generator).

    ping_series.py --agent unix:///abs/agent.sock --proto-root DIR --gen-dir DIR \
                   --count N --interval-ms MS [--warmup W]

Prints one JSON object: {"rtt_us": [N round trips in microseconds]}. Round trips are timed
with time.perf_counter_ns around the call; calls start every MS milliseconds (paced like the
bench's own client); W unmeasured calls first warm the connection.
"""

import argparse
import json
import os
import sys
import time


def agent_pinger(args):
    """A function doing one Ping over one grpcio channel."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(here, "..", "..", "tests", "clients", "python"))
    from guest_client import generate  # the conformance client's stub generator

    import grpc

    guest_pb2, guest_pb2_grpc = generate(args.proto_root, args.gen_dir)
    stub = guest_pb2_grpc.GuestStub(grpc.insecure_channel(args.agent))
    request = guest_pb2.PingRequest()
    return lambda: stub.Ping(request, timeout=5)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agent", required=True)
    p.add_argument("--proto-root", required=True)
    p.add_argument("--gen-dir", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--interval-ms", type=float, required=True)
    p.add_argument("--warmup", type=int, default=20)
    args = p.parse_args()
    ping = agent_pinger(args)
    for _ in range(args.warmup):
        ping()
    interval = int(args.interval_ms * 1e6)
    rtts = []
    next_at = time.perf_counter_ns()
    for _ in range(args.count):
        now = time.perf_counter_ns()
        if next_at > now:
            time.sleep((next_at - now) / 1e9)
        start = time.perf_counter_ns()
        ping()
        rtts.append((time.perf_counter_ns() - start) / 1000)
        next_at = start + interval
    json.dump({"rtt_us": rtts}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
