"""CriClient's list calls hand back the objects of an earlier answer (`known`)
for what did not change, and build anew what did: on the real containerd."""
from __future__ import annotations

import dataclasses

import pytest

from cri_exporter.cri import CriClient
from cri_exporter.inventory import Inventory

pytestmark = pytest.mark.containerd


def test_unchanged_objects_come_back_as_they_were(lab):
    cd, _ = lab
    client = CriClient(cd.endpoint, timeout=10)
    try:
        pods, containers = client.list_pod_sandboxes(), client.list_containers()
        assert pods and containers
        known_p, known_c = {p.id: p for p in pods}, {c.id: c for c in containers}
        again_p = client.list_pod_sandboxes(known=known_p)
        again_c = client.list_containers(known=known_c)
        fresh_p, fresh_c = client.list_pod_sandboxes(), client.list_containers()
        # Other tests share the lab: compare the objects listed in both answers.
        for again, known, fresh in ((again_p, known_p, fresh_p), (again_c, known_c, fresh_c)):
            by_id = {o.id: o for o in fresh}
            shared = [o for o in again if o.id in known and o.id in by_id and o.state == by_id[o.id].state]
            assert shared
            assert all(o is known[o.id] for o in shared)  # the very objects
            assert all(o == by_id[o.id] for o in shared)  # equal to what a fresh answer says
        # An inventory over reused objects is the one over fresh ones.
        a, b = Inventory(again_p, again_c), Inventory(fresh_p, fresh_c)
        assert {i: c.id for i, c in a.current_containers.items()} == {i: c.id for i, c in b.current_containers.items()}
    finally:
        client.close()


def test_a_changed_state_or_creation_time_is_built_anew(lab):
    cd, _ = lab
    client = CriClient(cd.endpoint, timeout=10)
    try:
        containers = client.list_containers()
        c = containers[0]
        other_state = "exited" if c.state != "exited" else "running"
        known = {c.id: dataclasses.replace(c, state=other_state)}
        again = {x.id: x for x in client.list_containers(known=known)}
        assert again[c.id] is not known[c.id] and again[c.id].state == c.state
        known = {c.id: dataclasses.replace(c, created_at_ns=c.created_at_ns + 1)}
        again = {x.id: x for x in client.list_containers(known=known)}
        assert again[c.id] is not known[c.id] and again[c.id].created_at_ns == c.created_at_ns
        pods = client.list_pod_sandboxes()
        p = pods[0]
        known_p = {p.id: dataclasses.replace(p, state="notready" if p.state == "ready" else "ready")}
        again_p = {x.id: x for x in client.list_pod_sandboxes(known=known_p)}
        assert again_p[p.id] is not known_p[p.id] and again_p[p.id].state == p.state
    finally:
        client.close()
