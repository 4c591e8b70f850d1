#!/usr/bin/env python3
"""End-to-end CRI smoke test against containerd (there is no crictl here).

Run through hack/cri-smoke.sh, which provides grpcio and the generated CRI v1
stubs (api_pb2*.py on PYTHONPATH). Talks only to the containerd socket, the
loopback registry (through containerd) and the pod this test creates.

Steps: Version, PullImage (through the registry mirror), RunPodSandbox (CNI
bridge), PodSandboxStatus (pod IP in the pod CIDR), CreateContainer/StartContainer
for busybox and for argecho (image Entrypoint/Cmd/WorkingDir/Env), checks the
CRI log files, then stops and removes everything it created.
"""

import argparse
import ipaddress
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import grpc

import api_pb2 as cri
import api_pb2_grpc as cri_grpc


def step(msg):
    print("cri-smoke: " + msg, flush=True)


def wait_exit(rt, cid, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = rt.ContainerStatus(cri.ContainerStatusRequest(container_id=cid)).status
        if st.state == cri.CONTAINER_EXITED:
            return st
        time.sleep(0.1)
    raise SystemExit("container %s did not exit within %ss" % (cid, timeout))


def read_log(path, timeout=5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path) and os.path.getsize(path) > 0:
            break
        time.sleep(0.1)
    with open(path) as f:
        return f.read()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", default=os.environ.get("KRS_CONTAINERD_SOCKET", "/run/containerd/containerd.sock"))
    ap.add_argument("--registry", default=os.environ.get("KRS_REGISTRY", "127.0.0.1:5000"))
    ap.add_argument("--pod-cidr", default=os.environ.get("KRS_POD_CIDR", "10.88.0.0/16"))
    ap.add_argument("--busybox", default=os.environ.get("KRS_BUSYBOX", "/bin/busybox"))
    ap.add_argument("--keep", action="store_true", help="leave the pod running")
    a = ap.parse_args()

    ch = grpc.insecure_channel("unix://" + a.socket)
    rt = cri_grpc.RuntimeServiceStub(ch)
    im = cri_grpc.ImageServiceStub(ch)

    v = rt.Version(cri.VersionRequest(version="v1"))
    step("version: %s %s (CRI %s)" % (v.runtime_name, v.runtime_version, v.runtime_api_version))

    busybox = a.registry + "/busybox:1.36"
    argecho = a.registry + "/argecho:1"
    for ref in (busybox, argecho, a.registry + "/busybox:2"):
        t0 = time.time()
        r = im.PullImage(cri.PullImageRequest(image=cri.ImageSpec(image=ref)))
        step("PullImage %s -> %s (%.0f ms)" % (ref, r.image_ref, (time.time() - t0) * 1000))

    logdir = tempfile.mkdtemp(prefix="cri-smoke-")
    os.chmod(logdir, 0o755)
    uid = str(uuid.uuid4())
    name = "cri-smoke-" + uid[:8]
    pod_cfg = cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=name, namespace="default", uid=uid, attempt=0),
        hostname=name,
        log_directory=logdir,
        labels={"app": "cri-smoke"},
        linux=cri.LinuxPodSandboxConfig(
            cgroup_parent="/kubepods/besteffort/pod" + uid,
            security_context=cri.LinuxSandboxSecurityContext(
                namespace_options=cri.NamespaceOption(network=cri.POD, pid=cri.CONTAINER, ipc=cri.POD)
            ),
        ),
    )
    t0 = time.time()
    pod_id = rt.RunPodSandbox(cri.RunPodSandboxRequest(config=pod_cfg)).pod_sandbox_id
    step("RunPodSandbox %s (%.0f ms)" % (pod_id[:12], (time.time() - t0) * 1000))
    ok = False
    try:
        st = rt.PodSandboxStatus(cri.PodSandboxStatusRequest(pod_sandbox_id=pod_id)).status
        ip = st.network.ip
        if st.state != cri.SANDBOX_READY:
            raise SystemExit("sandbox not ready: %s" % st.state)
        if not ip or ipaddress.ip_address(ip) not in ipaddress.ip_network(a.pod_cidr):
            raise SystemExit("pod IP %r not in %s" % (ip, a.pod_cidr))
        step("sandbox ready, pod IP %s" % ip)
        # the host reaches the pod over the bridge (traffic only to our own pod)
        ping = subprocess.run([a.busybox, "ping", "-c", "1", "-W", "3", ip], capture_output=True, text=True)
        if ping.returncode != 0:
            raise SystemExit("host cannot ping pod IP %s: %s" % (ip, ping.stdout + ping.stderr))
        step("host -> pod ping ok")

        def run(cname, image, command=None, args=None, env=None):
            cfg = cri.ContainerConfig(
                metadata=cri.ContainerMetadata(name=cname, attempt=0),
                image=cri.ImageSpec(image=image),
                command=command or [],
                args=args or [],
                envs=[cri.KeyValue(key=k, value=v) for k, v in (env or {}).items()],
                log_path=cname + "/0.log",
                linux=cri.LinuxContainerConfig(
                    # negative oom_score_adj is refused by this kernel; containerd must clamp it
                    resources=cri.LinuxContainerResources(oom_score_adj=-997),
                ),
            )
            t0 = time.time()
            cid = rt.CreateContainer(
                cri.CreateContainerRequest(pod_sandbox_id=pod_id, config=cfg, sandbox_config=pod_cfg)
            ).container_id
            rt.StartContainer(cri.StartContainerRequest(container_id=cid))
            step("container %s %s started (%.0f ms)" % (cname, cid[:12], (time.time() - t0) * 1000))
            cst = wait_exit(rt, cid)
            log = read_log(os.path.join(logdir, cname, "0.log"))
            return cid, cst, log

        _, cst, log = run(
            "hello",
            busybox,
            command=["sh", "-c", 'echo hello-cri; echo "ip=$(ip -4 -o addr show eth0 | awk \'{print $4}\')"; '
                     'cat /proc/self/oom_score_adj; exit 3'],
        )
        step("hello exit=%d log:\n%s" % (cst.exit_code, log.rstrip()))
        if cst.exit_code != 3 or " stdout F hello-cri" not in log or ("ip=" + ip) not in log:
            raise SystemExit("hello container output/exit code wrong")

        _, cst, log = run("argecho", argecho, env={"FROM_CRI": "yes"})
        step("argecho exit=%d log: %s" % (cst.exit_code, log.strip()))
        if "stdout F entry default-arg" not in log:
            raise SystemExit("argecho: image Entrypoint+Cmd not used")
        _, cst, log = run("argecho-args", argecho, args=["from-args"])
        step("argecho-args log: %s" % log.strip())
        if "stdout F entry from-args" not in log:
            raise SystemExit("argecho: args should replace the image Cmd only")
        _, cst, log = run("argecho-env", argecho, command=["sh", "-c", 'echo "$PWD $IMAGE_ENV $FROM_CRI"'],
                          env={"FROM_CRI": "yes"})
        step("argecho-env log: %s" % log.strip())
        if "stdout F /tmp from-image yes" not in log:
            raise SystemExit("argecho: WorkingDir/Env from the image not applied")
        ok = True
    finally:
        if not a.keep:
            rt.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod_id))
            rt.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
            shutil.rmtree(logdir, ignore_errors=True)
            step("pod removed")
    step("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
