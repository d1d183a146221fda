"""A CRI client in Python's grpcio, with its default settings, as
operators' scripts and test harnesses use it: it sends the socket path as
:authority, which Go clients never do.

usage: grpcio_client.py <crid socket> <runtime_v1.proto> <pod log dir>
Prints one line per call: `<RPC> ok <detail>` or `<RPC> error <code> <details>`.
"""

import os
import sys
import tempfile

import grpc
from grpc_tools import protoc


def stubs(proto):
    """runtime_v1_pb2 and runtime_v1_pb2_grpc, compiled from crid's proto."""
    out = tempfile.mkdtemp(prefix="crid-grpcio-")
    include = os.path.dirname(proto)
    status = protoc.main(["protoc", f"-I{include}", f"--python_out={out}",
                          f"--grpc_python_out={out}", proto])
    if status != 0:
        sys.exit(f"protoc failed on {proto}")
    sys.path.insert(0, out)
    name = os.path.splitext(os.path.basename(proto))[0]
    return __import__(f"{name}_pb2"), __import__(f"{name}_pb2_grpc")


def call(name, function, *args):
    try:
        response = function(*args, timeout=30)
    except grpc.RpcError as error:
        print(f"{name} error {error.code().name} {error.details()}", flush=True)
        return None
    return response


def main():
    socket, proto, log_dir = sys.argv[1:4]
    pb, pb_grpc = stubs(proto)
    with grpc.insecure_channel(f"unix://{socket}") as channel:
        runtime = pb_grpc.RuntimeServiceStub(channel)
        version = call("Version", runtime.Version, pb.VersionRequest(version="v1"))
        if version is not None:
            print(f"Version ok {version.runtime_name} {version.runtime_api_version}", flush=True)
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name="grpcio", uid="grpcio-uid", namespace="default"),
            log_directory=log_dir,
            linux=pb.LinuxPodSandboxConfig(
                security_context=pb.LinuxSandboxSecurityContext(
                    namespace_options=pb.NamespaceOption(network=pb.NODE)
                )
            ),
        )
        pod = call("RunPodSandbox", runtime.RunPodSandbox, pb.RunPodSandboxRequest(config=config))
        if pod is not None:
            print(f"RunPodSandbox ok {pod.pod_sandbox_id}", flush=True)
        listed = call("ListContainers", runtime.ListContainers, pb.ListContainersRequest())
        if listed is not None:
            print(f"ListContainers ok {len(listed.containers)}", flush=True)


if __name__ == "__main__":
    main()
