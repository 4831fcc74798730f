"""`tasft-ray doctor`: is this cluster ready for a sweep? Its nodes and resources, and, from every
node, whether the sweep's storage can be written and the tracking server answers.

What a sweep needs from a cluster with no shared disk is reached from every node, not only from
the driver; each check therefore runs as a Ray task pinned to each node. One line per node, one
line per problem; the exit code says whether there was any.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass

from tasft_ray import tracking
from tasft_ray.cluster import init_ray
from tasft_ray.config import Config
from tasft_ray.errors import UserError, one_line
from tasft_ray.storage import Location, location


@dataclass
class Report:
    nodes: list[str]
    problems: list[str]


def _from_node(storage: Location, tracking_uri: str) -> list[str]:
    """Run on one node: what it cannot reach."""
    problems = []
    try:
        storage.check_writable("sweep.storage", probe=True)
    except UserError as exc:
        problems.append(str(exc))
    if tracking_uri.startswith(("http://", "https://")):
        try:
            url = f"{tracking_uri.rstrip('/')}/health"
            with urllib.request.urlopen(url, timeout=5) as resp:
                resp.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            problems.append(f"tracking.uri {tracking_uri}: no answer ({one_line(reason, 200)})")
    return problems


def check(cfg: Config) -> Report:
    """Join the cluster (``RAY_ADDRESS``, else a local one) and check it from every node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    init_ray(cfg)
    storage = location(cfg.sweep.storage, "sweep.storage")
    uri = tracking.tracking_uri(cfg)
    nodes, problems = [], []
    alive = [n for n in ray.nodes() if n.get("Alive")]
    if len(alive) > 1 and storage.local:
        problems.append(
            f"sweep.storage {storage.uri} is a local folder and this cluster has {len(alive)} "
            "nodes: unless it is a shared (NFS) mount, use s3://BUCKET/PREFIX"
        )
    if len(alive) > 1 and uri.startswith(("sqlite:", "file:")):
        problems.append(
            f"tracking.uri {uri} is a file on one machine: trials on other nodes cannot log to "
            "it; run `mlflow server` and set MLFLOW_TRACKING_URI=http://HOST:PORT"
        )
    probe = ray.remote(num_cpus=0)(_from_node)
    for n in alive:
        res = n.get("Resources", {})
        shown = ", ".join(
            f"{k} {v:g}" for k, v in sorted(res.items()) if not k.startswith(("node:", "memory"))
            and not k.endswith("_memory")
        )  # fmt: skip
        memory = res.get("memory", 0) / 2**30
        nodes.append(f"node {n['NodeID'][:12]} {n['NodeManagerAddress']}: {shown}, "
                     f"memory {memory:.1f} GiB")  # fmt: skip
        strategy = NodeAffinitySchedulingStrategy(node_id=n["NodeID"], soft=False)
        found = ray.get(probe.options(scheduling_strategy=strategy).remote(storage, uri))
        problems += [f"from node {n['NodeID'][:12]}: {p}" for p in found]
    return Report(nodes, problems)
