"""The vsock row of the client matrix (issue 12): a grpc-core client (Python grpcio) calls the
agent over AF_VSOCK through grpc-core's own `vsock:CID:PORT` resolver, with default channel
options (no authority override: what a new user writes).

Runs inside the test VM from the read-only Python disk that tests/vm/mkpybundle.sh builds
(interpreter, stdlib, grpcio, protobuf, grpcio-health-checking and the stubs generated from
proto/boxlite/v1/guest.proto on the host). tests/tests/vm_e2e.rs starts it and asserts on
what it prints; this script only reports what the client saw.

    vsock_client.py --target vsock:1:2697 [--volume /data] [--timeout S]

Prints one line `PYCLIENT_JSON {...}`: the versions, the time `import grpc` took, whether
grpc-core has its vsock resolver compiled in, and per call either {"ok": true, ...what the answer holds} or {"ok": false, "code": NAME,
"details": ..., "debug": grpc-core's debug error string}. With --volume, also Quiesce of
that mountpoint, FreezeStatus while frozen, Thaw and FreezeStatus after. Every call carries
a deadline of --timeout seconds, so the script cannot hang. Exit status 0 when every call
succeeded, 1 otherwise.
"""

import argparse
import json
import sys
import time


def has_vsock_resolver():
    """Whether this grpcio's grpc-core was compiled with its `vsock:` resolver (it is only
    with GRPC_HAVE_VSOCK, i.e. built against glibc >= 2.18; PyPI's manylinux2014 wheels are
    not): the factory's type name is in the extension module."""
    import mmap
    from grpc._cython import cygrpc

    with open(cygrpc.__file__, "rb") as f:
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return m.find(b"VSockResolverFactory") >= 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--target", required=True)
    p.add_argument("--volume")
    p.add_argument("--timeout", type=float, default=60.0)
    a = p.parse_args()

    t = time.monotonic()
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from boxlite.v1 import guest_pb2, guest_pb2_grpc
    from google.protobuf import __version__ as protobuf_version

    report = {
        "python": sys.version.split()[0],
        "grpcio": grpc.__version__,
        "protobuf": protobuf_version,
        "target": a.target,
        "import_s": round(time.monotonic() - t, 3),
        "vsock_resolver": has_vsock_resolver(),
        "calls": [],
    }

    # Default options: grpc-core picks the :authority for the vsock target itself.
    channel = grpc.insecure_channel(a.target)
    guest = guest_pb2_grpc.GuestStub(channel)
    metrics = guest_pb2_grpc.GuestMetricsStub(channel)
    health = health_pb2_grpc.HealthStub(channel)

    def call(name, fn, summary):
        t = time.monotonic()
        entry = {"call": name}
        try:
            resp = fn()
            entry.update(ok=True, **summary(resp))
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            entry.update(
                ok=False,
                code=code.name if code else None,
                details=e.details() if hasattr(e, "details") else str(e),
                debug=e.debug_error_string() if hasattr(e, "debug_error_string") else None,
            )
        except Exception as e:  # a client-side failure: reported, not raised
            entry.update(ok=False, code=None, details=f"{type(e).__name__}: {e}")
        entry["ms"] = round(1000 * (time.monotonic() - t), 1)
        report["calls"].append(entry)
        return entry

    def status_summary(r):
        return {
            "frozen": r.frozen,
            "mountpoints": [f.mountpoint for f in r.filesystems],
        }

    timeout = a.timeout
    call("Ping", lambda: guest.Ping(guest_pb2.PingRequest(), timeout=timeout),
         lambda r: {"version": r.version})
    for service in ("", "boxlite.v1.Guest"):
        call(
            f"Health.Check({service})",
            lambda: health.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout),
            lambda r: {"status": health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)},
        )
    call("FreezeStatus",
         lambda: guest.FreezeStatus(guest_pb2.FreezeStatusRequest(), timeout=timeout),
         status_summary)
    call("GetMetrics",
         lambda: metrics.GetMetrics(guest_pb2.GetMetricsRequest(), timeout=timeout),
         lambda r: {"bytes": len(r.text),
                    "build_info": [l for l in r.text.splitlines()
                                   if l.startswith("guest_agent_build_info")]})
    if a.volume:
        def outcomes(count_field):
            return lambda r: {
                "count": getattr(r, count_field),
                "filesystems": [
                    {"mountpoint": f.mountpoint, "fstype": f.fstype,
                     "outcome": guest_pb2.FsOutcome.Name(f.outcome)}
                    for f in r.filesystems
                ],
            }

        call("Quiesce",
             lambda: guest.Quiesce(guest_pb2.QuiesceRequest(mountpoints=[a.volume]),
                                   timeout=timeout),
             outcomes("frozen_count"))
        call("FreezeStatus(frozen)",
             lambda: guest.FreezeStatus(guest_pb2.FreezeStatusRequest(), timeout=timeout),
             status_summary)
        # Thaw whatever became of the Quiesce: nothing may stay frozen because of this client.
        call("Thaw", lambda: guest.Thaw(guest_pb2.ThawRequest(), timeout=timeout),
             outcomes("thawed_count"))
        call("FreezeStatus(thawed)",
             lambda: guest.FreezeStatus(guest_pb2.FreezeStatusRequest(), timeout=timeout),
             status_summary)
    channel.close()

    print("PYCLIENT_JSON " + json.dumps(report, sort_keys=True), flush=True)
    return 0 if all(c["ok"] for c in report["calls"]) else 1


if __name__ == "__main__":
    sys.exit(main())
