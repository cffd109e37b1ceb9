"""The event kernel: resources serialise, independent work overlaps, dependencies and streams hold, ties
break deterministically, and the critical path adds up to the makespan."""

import random

import pytest

from romachip.perf import event_kernel
from romachip.perf.event_kernel import ReferenceSimulator, Simulator

NATIVE = pytest.param(
    "native", marks=pytest.mark.skipif(event_kernel._events is None, reason="the C event loop is not built here")
)
LOOPS = ("python", NATIVE)  # Simulator's two event loops


def test_one_resource_serialises_and_two_overlap():
    sim = Simulator()
    a = sim.add("a", "R", 10, "macs")
    b = sim.add("b", "R", 5, "macs")
    c = sim.add("c", "S", 7, "noc")
    s = sim.run()
    assert (s.tasks[a].start, s.tasks[a].end) == (0, 10)
    assert (s.tasks[b].start, s.tasks[b].end) == (10, 15)  # same resource: after a (lower seq first)
    assert (s.tasks[c].start, s.tasks[c].end) == (0, 7)  # other resource: overlaps
    assert s.makespan_cycles == 15
    assert s.busy_cycles == {"R": 15, "S": 7}


def test_finish_dependency_with_lag():
    sim = Simulator()
    a = sim.add("a", "R", 10, "macs")
    b = sim.add("b", "S", 3, "noc", after=[a], lag_cycles=2)
    s = sim.run()
    assert (s.tasks[b].start, s.tasks[b].end) == (12, 15)


def test_stream_dependency_starts_early_and_ends_after_producer():
    sim = Simulator()
    a = sim.add("bcast", "N", 20, "noc")
    b = sim.add("mac", "L", 5, "macs", stream=[a], lag_cycles=1, end_lag_cycles=4)
    c = sim.add("long", "M", 30, "macs", stream=[a], lag_cycles=1, end_lag_cycles=4)
    s = sim.run()
    assert (s.tasks[b].start, s.tasks[b].end) == (1, 24)  # waits for the last flit + 4
    assert (s.tasks[c].start, s.tasks[c].end) == (1, 31)  # its own work is longer
    assert s.tasks[b].stretched_by == a


def test_priority_breaks_ties_then_sequence():
    sim = Simulator()
    sim.add("late", "R", 1, "macs", priority=1)
    sim.add("first", "R", 1, "macs", priority=0)
    sim.add("second", "R", 1, "macs", priority=0)
    s = sim.run()
    assert [t.start for t in s.tasks] == [2, 0, 1]


def test_critical_path_adds_up_to_makespan():
    sim = Simulator()
    a = sim.add("a", "R1", 10, "macs")
    b = sim.add("b", "R2", 5, "noc", after=[a], lag_cycles=2)
    sim.add("c", "R1", 3, "macs")
    sim.add("d", "R3", 4, "vector", stream=[b], lag_cycles=1, end_lag_cycles=1)
    s = sim.run()
    crit = s.critical_bound_cycles()
    assert sum(crit.values()) == s.makespan_cycles == 18
    # d (13..18) waited 1 cycle past its own 4 for b's last flit; b started 1 cycle before d; the 2-cycle
    # lag between a and b is latency; a is 10 cycles of MACs
    assert crit == {"noc": 2, "vector": 4, "latency": 2, "macs": 10}


def test_same_graph_same_schedule():
    def build():
        sim = Simulator()
        x = sim.add("x", "R", 3, "macs")
        for i in range(5):
            sim.add(f"y{i}", "R" if i % 2 else "S", i + 1, "noc", after=[x])
        return [(t.start, t.end) for t in sim.run().tasks]

    assert build() == build()


def test_bad_graphs_are_refused():
    sim = Simulator()
    with pytest.raises(ValueError, match="unknown task 3"):
        sim.add("a", "R", 1, "macs", after=[3])
    with pytest.raises(ValueError, match="negative duration"):
        sim.add("a", "R", -1, "macs")


def _random_graph(sim, rng: random.Random, n: int) -> None:
    for i in range(n):
        earlier = range(i)
        after = rng.sample(earlier, min(i, rng.randint(0, 3)))
        stream = [d for d in rng.sample(earlier, min(i, rng.randint(0, 2))) if d not in after]
        sim.add(f"t{i}", rng.choice("RSTU"), rng.randint(0, 9), rng.choice(["macs", "noc", "rom"]), after=after,
                stream=stream, lag_cycles=rng.randint(0, 3), end_lag_cycles=rng.randint(0, 3),
                priority=rng.randint(-1, 2), op=f"op{i % 7}")  # fmt: skip


@pytest.mark.parametrize("kernel", LOOPS)
@pytest.mark.parametrize("seed", range(20))
def test_fast_kernel_matches_the_reference_task_for_task(seed, kernel):
    """The column kernel (`Simulator`, its Python loop and its C loop) gives the plain one's schedule: every
    task's start, end, cause and stretch, the busy cycles (in the same order) and the critical path."""
    fast, ref = Simulator(), ReferenceSimulator()
    for sim in (fast, ref):
        _random_graph(sim, random.Random(seed), 120)
    a, b = fast.run(kernel=kernel), ref.run()
    assert a.tasks == b.tasks
    assert a.makespan_cycles == b.makespan_cycles
    assert list(a.busy_cycles.items()) == list(b.busy_cycles.items())
    assert a.critical_bound_cycles() == b.critical_bound_cycles()


@pytest.mark.parametrize("kernel", LOOPS)
def test_a_cycle_is_refused_by_both_loops(kernel):
    sim = Simulator()  # `task` takes ids as given: a depends on b, b on a
    sim.task("a", "R", 1, "macs", (1,), (), 0, 0, 0, "")
    sim.task("b", "R", 1, "macs", (0,), (), 0, 0, 0, "")
    sim.task("c", "S", 2, "macs", (), (), 0, 0, 0, "")
    with pytest.raises(RuntimeError, match="cycle or a missing dependency .* 'a'"):
        sim.run(kernel=kernel)


@pytest.mark.skipif(event_kernel._events is None, reason="the C event loop is not built here")
def test_graphs_past_int64_take_the_python_loop():
    """Numbers the C loop cannot hold (a float lag, a duration past int64) run in Python, with Python's
    numbers, whatever loop is the default."""
    big = Simulator()
    a = big.add("a", "R", 2**70, "macs")
    big.add("b", "R", 1, "macs", after=[a], lag_cycles=0.5)
    s = big.run()
    assert (s.tasks[1].start, s.tasks[1].end) == (2**70 + 0.5, 2**70 + 1.5)
    assert event_kernel.KERNEL == "native"
    with pytest.raises(ValueError, match="unknown event kernel"):
        big.run(kernel="fortran")


def test_without_drops_task_ranges_and_redirects_their_dependents_to_the_alias():
    sim = Simulator()
    a = sim.add("a", "R", 3, "macs")
    b = sim.add("b", "R", 4, "macs", after=[a])  # dropped
    sim.add("c", "S", 2, "noc", after=[b])  # waits for b: for a, once b is gone
    sub = sim.without([(1, 2)], {b: a})
    assert sub.graph.name == ["a", "c"] and sub.graph.after == [(), (0,)]
    assert sub.run().end == [3, 5]
    assert sim.run().end == [3, 7, 9]  # the graph itself is unchanged
    assert sim.without([(1, 2)], {}) is None  # c waits for a dropped task that has no alias
    with pytest.raises(ValueError, match="ascending and disjoint"):
        sim.without([(2, 1)], {})
