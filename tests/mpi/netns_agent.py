"""Stand-in for ssh when tests/test_distributed.py puts "hosts" in network namespaces.

Open MPI starts its daemon on a remote host as `<agent> [options] host command...`; this runs the
command in the namespace named for that host (FG_NETNS_MAP="10.0.0.2=ns-b,..."), in a UTS namespace
of its own whose hostname is the namespace's name, so the launcher sees two distinct nodes.
"""
import os
import sys

args = sys.argv[1:]
while args and args[0].startswith("-"):
    args = args[1:]
host, command = args[0], args[1:]
namespaces = dict(item.split("=", 1) for item in os.environ["FG_NETNS_MAP"].split(","))
ns = namespaces[host]
os.execvp("ip", ["ip", "netns", "exec", ns, "unshare", "--uts", "/bin/sh", "-c",
                 f"hostname {ns}; " + " ".join(command)])
