"""Links and default routes read over netlink (pyroute2), read-only.

The doctor runs in the node's network namespace (hostNetwork in the
DaemonSet); `netns` names another one (tests use namespaces they create).
"""
from __future__ import annotations

import socket
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    mtu: int
    up: bool
    kind: str  # "veth", "bridge", "dummy", ... or "" for physical
    master: int | None


@dataclass
class NetFacts:
    links: list[Link] = field(default_factory=list)
    default_routes: list[tuple[str, str]] = field(default_factory=list)  # (gateway or "", device)

    def by_index(self) -> dict[int, Link]:
        return {link.index: link for link in self.links}

    def link(self, name: str) -> Link | None:
        return next((link for link in self.links if link.name == name), None)


def read(netns: str | None = None) -> NetFacts:
    """Raises OSError/NetlinkError when netlink cannot be read."""
    from pyroute2 import IPRoute

    # flags=0: never create the namespace (pyroute2's default is O_CREAT).
    kwargs = {"netns": netns, "flags": 0} if netns else {}
    facts = NetFacts()
    with IPRoute(**kwargs) as ip:
        for msg in ip.get_links():
            info = msg.get_attr("IFLA_LINKINFO")
            kind = (info.get_attr("IFLA_INFO_KIND") if info is not None else None) or ""
            facts.links.append(Link(
                index=msg["index"],
                name=msg.get_attr("IFLA_IFNAME") or "",
                mtu=msg.get_attr("IFLA_MTU") or 0,
                up=bool(msg["flags"] & 1),
                kind=kind,
                master=msg.get_attr("IFLA_MASTER"),
            ))
        names = facts.by_index()
        for r in ip.get_routes(family=socket.AF_INET, table=254):
            if r["dst_len"] != 0 or r.get_attr("RTA_DST") is not None:
                continue
            oif = r.get_attr("RTA_OIF")
            dev = names[oif].name if oif in names else str(oif or "")
            facts.default_routes.append((r.get_attr("RTA_GATEWAY") or "", dev))
    return facts
