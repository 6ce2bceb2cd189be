"""The pure decisions of syncmail.plan, driven by hypothesis."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from roammail.syncmail.plan import (
    Entry,
    LocalCopy,
    batch_length,
    batch_limit,
    plan_listing,
    ranges,
    removable,
)

names = st.text(alphabet=st.sampled_from("ab.\n/ -:$'"), min_size=0, max_size=6)
kinds = st.sampled_from("fldo")
sizes = st.integers(min_value=0, max_value=5)


@st.composite
def worlds(draw):
    listing = draw(st.lists(st.tuples(names, kinds), max_size=12, unique_by=lambda t: t[0]))
    entries = [Entry(i + 1, k, n) for i, (n, k) in enumerate(listing)]
    local = {n: draw(sizes) for n, _ in listing if draw(st.booleans())}
    journal = {n: draw(sizes) for n, _ in listing if draw(st.booleans())}
    return entries, local, journal


@given(worlds())
def test_plan_never_fetches_a_local_name_and_covers_everything(w):
    entries, local, journal = w
    plan = plan_listing(entries, lambda n: LocalCopy(n, local[n]) if n in local else None,
                        journal)
    fetched = [e.name for e in plan.fetch]
    assert not set(fetched) & set(local)
    for entry, size in plan.confirm:
        assert entry.name in local and journal[entry.name] == local[entry.name] == size
    for entry in plan.fetch + [e for e, _ in plan.confirm]:
        assert entry.kind == "f" and "/" not in entry.name and "\n" not in entry.name
        assert entry.name and not entry.name.startswith(".")
    decided = (len(plan.fetch) + len(plan.confirm) + len(plan.collisions)
               + len(plan.refused))
    assert decided == len(entries)


@given(st.dictionaries(names, sizes), st.dictionaries(names, sizes))
def test_removes_only_what_was_stored_with_the_same_size(stored, now):
    for name in removable(stored, now):
        assert stored[name] == now[name]


@given(st.lists(st.integers(min_value=0, max_value=100), max_size=30),
       st.integers(min_value=1, max_value=5), st.integers(min_value=1, max_value=200))
def test_batches_keep_every_item_once(items, count, limit):
    out = []
    rest = list(items)
    while rest:
        n = batch_length(rest, count, limit)
        out.append(rest[:n])
        rest = rest[n:]
    assert [x for b in out for x in b] == items
    assert all(0 < len(b) <= count for b in out)
    assert all(sum(b) <= limit or len(b) == 1 for b in out)


@given(st.integers(min_value=1, max_value=3000), st.integers(min_value=0, max_value=20000))
def test_batch_schedule_keeps_batches_full_in_the_middle_and_small_at_the_ends(batch, total):
    left, batches, lefts = total, [], []  # each batch, and what was left before it
    while left:
        limit = batch_limit(batch, len(batches), left)
        assert 1 <= limit <= batch
        batches.append(min(limit, left))
        lefts.append(left)
        left -= batches[-1]
    assert sum(batches) == total
    least = max(1, batch // 10)
    if len(batches) >= 2:
        assert batches[0] <= max(least, batch // 4) and batches[1] <= max(least, batch // 2)
    # Never more than half of what is left, but for the smallest batches;
    # and only the ends are short of a whole batch.
    for size, rest in zip(batches, lefts):
        assert size <= max(least, -(-rest // 2))
    assert all(size == batch for size, rest in list(zip(batches, lefts))[2:] if rest >= 2 * batch)


@given(st.sets(st.integers(min_value=1, max_value=60)))
def test_ranges_round_trip(indices):
    got = set()
    for part in ranges(indices).split():
        a, _, b = part.partition("-")
        got.update(range(int(a), int(b or a) + 1))
    assert got == indices


def test_human_bytes_for_the_progress_line():
    from roammail.syncmail.log import human_bytes

    assert [human_bytes(n) for n in (0, 999, 1000, 300_000, 46_100_000, 2_300_000_000)] == [
        "0 bytes", "999 bytes", "1.0 KB", "300.0 KB", "46.1 MB", "2.3 GB"]
