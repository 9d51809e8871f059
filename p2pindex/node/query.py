"""Index queries and key listings: one page at a time, over a coverage plan, never silently partial.

The node a client asks is the query's coordinator. For one page it

1. checks the request (index name, bounds, page size, continuation) and refuses a bad one
   with one ``InvalidRequest``, counted;
2. plans coverage (``p2pindex.core.coverage``): ``r`` readable primaries per arc, 1 for
   ``one``, R for ``quorum``; with ``complete_only`` an arc short of ``r`` replicas fails the
   page with ``Unavailable`` before anything is read;
3. sends each chosen replica an ``IndexScan`` of its arcs after the cursor, at most ``limit``
   rows, all at once (its own part is read locally);
4. merges. Rows of one replica come in (term, key) order; a replica that filled its page may
   have more rows after its last, so the page is cut at the smallest last row of the
   replicas that filled theirs: everything up to that point is known. At ``r`` > 1 each key
   is decided by the merge of its replicas' versions (``versions.merge``), fetching the
   version of a replica that held the key but did not list it (the key no longer matches
   there, maybe because that replica saw a newer write): a key is answered only if its
   merged version still carries the term, and is live. So a quorum page holds every key
   whose last acknowledged quorum write matches and none whose acknowledged current version
   does not (with strict writes; a sloppy write acknowledged by fallbacks only reaches the
   primaries by hinted handoff). A key fewer than ``r`` replicas spoke for (one failed, or
   its arc has fewer readable replicas) is left out of a quorum page, which then says it
   is incomplete: a partial page holds no key a quorum did not confirm;
5. answers with the rows, the coverage (``complete``, the uncovered share of the ring, a
   replica that failed counts as uncovered once a replan without it fails too) and a
   continuation.

A traced page (``p2pindex.node.trace``: an HTTP request with ``X-P2P-Trace``) records
these steps as a key request's coordinator does: ``planned`` (each replica asked and its
share of the ring), each ``replica_answered`` or ``replica_failed`` as it happens,
``timed_out`` naming the replicas silent at the step's deadline, ``replanned``,
``versions_fetched`` (quorum pages) and ``decided``, or ``unavailable``.

The continuation is ``[1, issuer, query digest, ring digest, term, key, mac]``: the cursor
(the last row answered, so the next page resumes strictly after it), bound to the query it
came from by a digest of its index, bounds and prefix, and authenticated by a keyed BLAKE2b
with a secret only the issuing node holds (derived from its private key, so it survives
restarts).
An altered continuation, or one from another query, is refused; one presented to another
node is refused naming the node to ask (clients route it there). The cursor is a position in
(term, key) order, which does not depend on the ring, so a continuation planned on a ring
that has changed since resumes exactly: the next page is planned on the new ring.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import cbor2
import trio

from p2pindex.config import NodeConfig
from p2pindex.core import strict_cbor, versions
from p2pindex.core import terms as index_terms
from p2pindex.core.coverage import CoveragePlan, key_filter, plan_coverage, share_of
from p2pindex.core.ring import Ring
from p2pindex.core.terms import Term, term_order
from p2pindex.core.versions import VersionedObject
from p2pindex.errors import InvalidRequest, NotReady, P2PIndexError, Unavailable
from p2pindex.node import trace as trace_seam
from p2pindex.node.peers import PeerPool
from p2pindex.node.stats import StatisticsStore
from p2pindex.storage.index_rows import IndexScanPage, TermRange, check_range
from p2pindex.types import Address, consistency_from_wire, required_replies
from p2pindex.wire.messages import (
    IndexScan,
    IndexScanReply,
    Message,
    QueryReply,
    QueryRequest,
    ReplicaReadMany,
    ReplicaReadManyReply,
)

DEFAULT_PAGE = 100
MAX_PAGE = 1000
MAX_QUERY_TIMEOUT_MS = 60_000
CONTINUATION_FORMAT = 1
_MAC_BYTES = 16
_VALUE_BUDGET_SHARE = 2
"""A page with values stops once they reach 1/2 of a frame, so its reply always fits."""

Row = tuple[Term, bytes]
SortRow = tuple[tuple[int, Term], bytes]


class QueryView(Protocol):
    """What a query needs to know about the cluster (the node supplies it)."""

    @property
    def ring(self) -> Ring: ...

    def address_of(self, node_id: str) -> Address: ...

    def serves_reads(self, node_id: str) -> bool: ...

    def scan_refusal(self, runs: list[tuple[int, int]]) -> str | None:
        """Why this node's rows of ``runs`` (all of them when empty) may lack keys now."""
        ...

    def note_unreachable(self, node_id: str) -> None: ...

    @property
    def membership_confirmed(self) -> bool: ...


class Storage(Protocol):
    def get_many(self, keys: list[bytes]) -> dict[bytes, bytes]: ...

    def index_scan(self, page: IndexScanPage) -> list[Row]: ...

    def key_scan(
        self, prefix: bytes, after: bytes | None, limit: int, keep: Any = None
    ) -> list[bytes]: ...


@dataclass(frozen=True, slots=True)
class _Query:
    """A checked request: what every page of it shares, and where this page starts."""

    index: str
    terms: TermRange | None
    """None for a key listing."""
    prefix: bytes
    limit: int
    r: int
    after: Row | None
    digest: bytes


@dataclass(slots=True)
class _Answer:
    """One replica's reply to its sub-query."""

    node: str
    rows: list[Row]
    records: dict[bytes, bytes]
    truncated: bool


@dataclass(slots=True)
class _Page:
    rows: list[Row] = field(default_factory=list)
    values: list[list[bytes]] = field(default_factory=list)
    bound: SortRow | None = None
    """Everything up to here is decided; None when no replica filled its page."""


def _sort_row(row: Row) -> SortRow:
    return term_order(row[0]), row[1]


class QueryService:
    def __init__(
        self,
        node_id: str,
        view: QueryView,
        storage: Storage,
        peers: PeerPool,
        config: NodeConfig,
        stats: StatisticsStore,
        mac_key: bytes,
    ) -> None:
        self._node_id = node_id
        self._view = view
        self._storage = storage
        self._peers = peers
        self._config = config
        self._stats = stats
        self._mac_key = mac_key
        # Plans break ties at random so load spreads; seeded from the key, so a simulated
        # run stays reproducible and the node's own random stream is left untouched.
        self._rng = random.Random(mac_key)
        self._plans: dict[tuple[Ring, frozenset[str], int], CoveragePlan] = {}

    # --- coordinating a page ----------------------------------------------------------------

    async def query(self, request: QueryRequest) -> QueryReply:
        query = self._checked(request)
        if not self._view.membership_confirmed:
            # A ring restored from disk may lack members: its coverage claim would be false.
            raise NotReady(
                f"node {self._node_id} has not reached any member since it started, so it "
                "cannot plan a query over the whole ring yet; another node can serve it"
            )
        timeout = (min(request.timeout_ms, MAX_QUERY_TIMEOUT_MS) or 5000) / 1000.0
        ring = self._view.ring
        plan = self._plan(ring, query.r, set())
        trace = trace_seam.current()
        if trace is not None:
            trace.step("planned", **_plan_step(plan))
        if (request.complete_only and not plan.complete) or plan.uncovered_share >= 1.0:
            # A page that can read no arc at all is no answer: an empty page whose
            # continuation moved on would read as "no keys" to a client following it.
            self._stats.incr("queries.unavailable")
            partial = (
                "ask without complete_only for a partial answer marked as such"
                if plan.uncovered_share < 1.0
                else "no part of the ring can be read at this level; ask at a lower one"
            )
            if trace is not None:
                trace.step("unavailable", required=query.r, reason=partial)
            raise Unavailable(
                query.r,
                plan.fewest,
                f"{plan.uncovered_share:.1%} of the ring has fewer than {query.r} readable "
                f"replicas; {partial}",
            )
        deadline = trio.current_time() + timeout
        answers, failed = await self._ask(plan, query, request.values, self._step(deadline))
        if failed:
            # One replan without the replicas that failed, so a crash between planning and
            # asking costs a retry, not an incomplete page.
            plan = self._plan(ring, query.r, failed)
            if trace is not None:
                trace.step("replanned", without=sorted(failed), **_plan_step(plan))
            answers, failed = await self._ask(plan, query, request.values, self._step(deadline))
        step = self._step(deadline)
        page = await self._merge(plan, query, answers, failed, request.values, step)
        uncovered = plan.uncovered_share
        if failed:
            lost = [runs for node, runs in plan.assignments.items() if node in failed]
            uncovered = min(1.0, uncovered + sum(share_of(runs) for runs in lost))
        complete = plan.complete and not failed
        if (request.complete_only and not complete) or uncovered >= 1.0:
            self._stats.incr("queries.unavailable")
            if trace is not None:
                trace.step("unavailable", required=query.r, failed=sorted(failed))
            raise Unavailable(
                query.r, query.r - 1, f"replicas {', '.join(sorted(failed))} did not answer"
            )
        self._stats.incr("queries.pages")
        if not complete:
            self._stats.incr("queries.incomplete_pages")
        coverage: dict[str, Any] = {
            "complete": complete,
            "uncovered_share": round(uncovered, 6),
            "replicas_per_arc": query.r,
            "ring": _ring_digest(ring).hex(),
        }
        if failed:
            coverage["failed"] = sorted(failed)
        if request.explain:
            coverage["plan"] = plan.describe()
        cursor = self._next_cursor(page)
        if trace is not None:
            trace.step(
                "decided",
                rows=len(page.rows),
                complete=complete,
                uncovered_share=round(uncovered, 6),
                more=cursor is not None,
            )
        return QueryReply(
            [(_encoded(term, query), key) for term, key in page.rows],
            page.values,
            None if cursor is None else self._continuation(query, ring, cursor),
            coverage,
        )

    def _checked(self, request: QueryRequest) -> _Query:
        try:
            return self._parse(request)
        except (ValueError, TypeError) as exc:
            self._stats.incr("rejected.bad_query")
            raise InvalidRequest(f"query: {exc}") from None

    def _parse(self, request: QueryRequest) -> _Query:
        if not 1 <= request.limit <= MAX_PAGE:
            raise ValueError(f"page size {request.limit} is outside 1..{MAX_PAGE}")
        n = self._config.n_replicas
        r = required_replies(consistency_from_wire(request.consistency), n)
        if request.index:
            index_terms.check_name(request.index, self._config.term_limits)
            if request.lo is None or request.hi is None:
                raise ValueError(f"index {request.index!r}: a query needs a term or a range")
            lo = index_terms.decode_term(request.lo, "low")
            hi = index_terms.decode_term(request.hi, "high")
            for term in (lo, hi):
                index_terms.check_term(request.index, term, self._config.term_limits)
            terms: TermRange | None = check_range(request.index, lo, hi)
        else:
            if request.lo is not None or request.hi is not None:
                raise ValueError("a key listing takes a prefix, not terms")
            terms = None
        digest = _query_digest(request)
        after = None
        if request.continuation is not None:
            after = self._open_continuation(request.continuation, digest, terms is None)
        return _Query(request.index, terms, request.prefix, request.limit, r, after, digest)

    def _plan(self, ring: Ring, r: int, failed: set[str]) -> CoveragePlan:
        readable = frozenset(
            node for node in ring.nodes if node not in failed and self._view.serves_reads(node)
        )
        key = (ring, readable, r)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) > 64:
                self._plans.clear()
            plan = plan_coverage(
                ring,
                self._config.n_replicas,
                r,
                readable.__contains__,
                self._rng,
                prefer=self._node_id,
            )
            self._plans[key] = plan
        return plan

    def _step(self, deadline: float) -> float:
        """Seconds one step of a page (ask, ask again without the replicas that failed,
        fetch versions) may wait for replicas: ``replica_timeout`` at most, as a key request
        waits for one replica, and never past the page's deadline, so a page with a silent
        replica is answered within the client's timeout instead of after three of them."""
        remaining = deadline - trio.current_time()
        return max(0.0, min(self._config.replica_timeout, remaining))

    async def _ask(
        self, plan: CoveragePlan, query: _Query, values: bool, timeout: float
    ) -> tuple[list[_Answer], set[str]]:
        answers: list[_Answer] = []
        failed: set[str] = set()
        records = values or query.r > 1
        trace = trace_seam.current()
        after_term = None if query.after is None else _encoded(query.after[0], query)
        after_key = None if query.after is None else query.after[1]

        async def ask(node: str, runs: tuple[tuple[int, int], ...]) -> None:
            whole = any(start == end for start, end in runs)
            scan = IndexScan(
                query.index,
                None if query.terms is None else index_terms.encode_term(query.terms.lo),
                None if query.terms is None else index_terms.encode_term(query.terms.hi),
                query.prefix,
                [] if whole else [start for start, _ in runs],
                [] if whole else [end for _, end in runs],
                after_term,
                after_key,
                query.limit,
                records,
            )
            try:
                reply: Message
                if node == self._node_id:
                    reply = self.scan(scan)
                else:
                    address = self._view.address_of(node)
                    reply = await self._peers.request(address, scan, timeout)
                if not isinstance(reply, IndexScanReply):
                    raise InvalidRequest(f"unexpected reply {type(reply).__name__} to a scan")
                rows = [(self._term_of(term, query), key) for term, key in reply.rows]
            except (OSError, P2PIndexError, ValueError) as exc:  # ValueError: a garbled term
                self._stats.incr("queries.replica_failures")
                failed.add(node)
                if trace is not None:
                    trace.step("replica_failed", node=node, error=str(exc)[:200])
                if isinstance(exc, OSError):
                    # A refused connection is evidence the node is down, as on the key path.
                    # A replica slower than this page's deadline is not: the deadline is
                    # the client's, and one in a hurry must not cut others off from it.
                    self._view.note_unreachable(node)
                return
            answers.append(_Answer(node, rows, dict(reply.records), reply.truncated))
            if trace is not None:
                trace.step("replica_answered", node=node, rows=len(rows), more=reply.truncated)

        with trio.move_on_after(timeout):
            async with trio.open_nursery() as nursery:
                for node, runs in sorted(plan.assignments.items()):
                    nursery.start_soon(ask, node, runs)
        answered = {answer.node for answer in answers}
        silent = set(plan.assignments) - answered - failed
        if silent and trace is not None:
            trace.step("timed_out", unanswered=sorted(silent))
        failed |= silent
        return answers, failed

    def _term_of(self, raw: bytes, query: _Query) -> Term:
        if query.terms is None:
            return b""
        return index_terms.decode_term(raw, "answered")

    async def _merge(
        self,
        plan: CoveragePlan,
        query: _Query,
        answers: list[_Answer],
        failed: set[str],
        values: bool,
        timeout: float,
    ) -> _Page:
        page = _Page()
        for answer in answers:
            if answer.truncated and answer.rows:
                last = _sort_row(answer.rows[-1])
                if page.bound is None or last < page.bound:
                    page.bound = last
        start = None if query.after is None else _sort_row(query.after)

        def wanted(row: Row) -> bool:
            order = _sort_row(row)
            return (start is None or order > start) and (page.bound is None or order <= page.bound)

        if query.r == 1:
            if len(answers) == 1:
                # One replica answered for the whole ring: its rows are in order, after the
                # cursor, and its last row is the bound.
                rows = answers[0].rows
            else:
                rows = sorted(
                    {row for answer in answers for row in answer.rows if wanted(row)},
                    key=_sort_row,
                )
            objects = {
                key: obj
                for answer in answers
                for key, rec in answer.records.items()
                if (obj := _decoded(rec)) is not None
            }
        else:
            candidates = {row[1] for answer in answers for row in answer.rows if wanted(row)}
            objects = await self._versions_of(plan, candidates, answers, failed, timeout)
            rows = sorted(
                {row for key, obj in objects.items() for row in _rows_of(query, key, obj)},
                key=_sort_row,
            )
            rows = [row for row in rows if wanted(row)]
        budget = self._config.limits.max_frame // _VALUE_BUDGET_SHARE
        for row in rows[: query.limit]:
            if values:
                obj = objects.get(row[1])
                live = [] if obj is None else obj.values
                budget -= sum(len(value) for value in live) + len(row[1]) + 64
                if budget < 0 and page.rows:
                    page.bound = _sort_row(page.rows[-1])
                    break
                page.values.append(live)
            page.rows.append(row)
        if len(page.rows) == query.limit:
            page.bound = _sort_row(page.rows[-1])
        return page

    async def _versions_of(
        self,
        plan: CoveragePlan,
        keys: set[bytes],
        answers: list[_Answer],
        failed: set[str],
        timeout: float,
    ) -> dict[bytes, VersionedObject]:
        """Each candidate key's versions from every replica asked for it, merged. A key
        that fewer than ``r`` replicas spoke for (one failed) is left out: its merge could
        miss the version that replaced the one listed, and the page is incomplete anyway."""
        merged: dict[bytes, VersionedObject] = {}
        first_seen: dict[bytes, bytes] = {}
        heard: dict[bytes, int] = dict.fromkeys(keys, 0)

        def fold(key: bytes, record: bytes) -> None:
            if first_seen.get(key) == record:
                heard[key] += 1  # replicas that agree (the usual case) cost one decode
                return
            obj = _decoded(record)
            if obj is None:
                return  # a garbled record speaks for nothing
            heard[key] += 1
            first_seen.setdefault(key, record)
            _fold(merged, key, obj)

        missing: dict[str, list[bytes]] = {}
        for answer in answers:
            accepts = key_filter(plan.assignments.get(answer.node, ()))
            for key in keys:
                if accepts is not None and not accepts(key):
                    continue
                record = answer.records.get(key)
                if record is None:
                    missing.setdefault(answer.node, []).append(key)
                else:
                    fold(key, record)

        fetched = await self._fetch_records(missing, failed, timeout)
        for node, records in fetched.items():
            for key, record in zip(missing[node], records, strict=True):
                if record is None:
                    heard[key] += 1
                else:
                    fold(key, record)
        for key, count in heard.items():
            if count < plan.r:
                merged.pop(key, None)
        return merged

    async def _fetch_records(
        self, missing: dict[str, list[bytes]], failed: set[str], timeout: float
    ) -> dict[str, list[bytes | None]]:
        """The records each replica in ``missing`` holds for its keys, from those that
        answered within ``timeout``; every other one is added to ``failed``. A replica still
        silent at the deadline failed as surely as one that refused: the keys it was asked
        about go unconfirmed, so the page must say it is incomplete (index seed 70004: a
        quorum page dropped a key this way and still claimed to be complete)."""
        fetched: dict[str, list[bytes | None]] = {}

        async def fetch(node: str, wanted: list[bytes]) -> None:
            # A refusal or a broken connection is counted with the silent ones below.
            with contextlib.suppress(OSError, P2PIndexError):
                fetched[node] = await self._records_from(node, wanted, timeout)

        with trio.move_on_after(timeout):
            async with trio.open_nursery() as nursery:
                for node, wanted in missing.items():
                    nursery.start_soon(fetch, node, wanted)
        silent = set(missing) - set(fetched)
        if silent:
            self._stats.incr("queries.replica_failures", len(silent))
            failed |= silent
        trace = trace_seam.current()
        if missing and trace is not None:
            trace.step("versions_fetched", nodes=sorted(fetched), unanswered=sorted(silent))
        return fetched

    async def _records_from(
        self, node: str, wanted: list[bytes], timeout: float
    ) -> list[bytes | None]:
        """The records ``node`` holds for ``wanted`` (this node's own from storage)."""
        if node == self._node_id:
            found = self._storage.get_many(wanted)
            return [found.get(key) for key in wanted]
        reply = await self._peers.request(
            self._view.address_of(node), ReplicaReadMany(wanted), timeout
        )
        if not isinstance(reply, ReplicaReadManyReply):
            raise InvalidRequest("unexpected reply to a replica read")
        if len(reply.records) != len(wanted):
            raise InvalidRequest(
                f"a replica read of {len(wanted)} keys was answered with "
                f"{len(reply.records)} records"
            )
        return reply.records

    @staticmethod
    def _next_cursor(page: _Page) -> Row | None:
        """Resume strictly after what this page decided (None: nothing is left)."""
        if page.bound is None:
            return None
        (_kind, term), key = page.bound
        return term, key

    # --- continuations ----------------------------------------------------------------------

    def _continuation(self, query: _Query, ring: Ring, cursor: Row) -> bytes:
        body = [
            CONTINUATION_FORMAT,
            self._node_id,
            query.digest,
            _ring_digest(ring),
            cursor[0],
            cursor[1],
        ]
        return cbor2.dumps([*body, self._mac(body)])

    def _mac(self, body: list[object]) -> bytes:
        return hashlib.blake2b(
            cbor2.dumps(body), key=self._mac_key, digest_size=_MAC_BYTES
        ).digest()

    def _open_continuation(self, token: bytes, digest: bytes, listing: bool) -> Row:
        try:
            items = strict_cbor.loads(token)
        except (ValueError, TypeError, EOFError):
            items = None
        if type(items) is not list or len(items) != 7 or items[0] != CONTINUATION_FORMAT:
            raise ValueError("the continuation is not one this cluster issued")
        body, mac = items[:6], items[6]
        issuer = items[1]
        if type(issuer) is not str or (
            issuer != self._node_id and issuer not in self._view.ring.nodes
        ):
            # Not a member's: the bytes naming the issuer were altered (or never issued).
            raise ValueError("the continuation is not one this cluster issued")
        if issuer != self._node_id:
            raise ValueError(
                f"the continuation was issued by node {issuer!r} (at "
                f"{self._view.address_of(issuer)}); send the next page there, the node whose "
                "answer it came with (or start the query again)"
            )
        if type(mac) is not bytes or not hmac.compare_digest(mac, self._mac(body)):
            raise ValueError("the continuation was altered (its authentication failed)")
        if items[2] != digest:
            raise ValueError("the continuation belongs to another query")
        term, key = items[4], items[5]
        if type(key) is not bytes or type(term) not in (int, bytes) or (listing and term != b""):
            raise ValueError("the continuation is not one this cluster issued")
        return term, key

    # --- serving a sub-query ----------------------------------------------------------------

    def scan(self, request: IndexScan) -> IndexScanReply:
        """This replica's rows for a coordinator (see ``IndexScan``). A node that is still
        receiving any of the arcs asked refuses: its rows may lack keys, and a coordinator
        that has not heard so yet would take them for the whole arc."""
        if len(request.start) != len(request.end):
            self._stats.incr("rejected.bad_scan")
            raise InvalidRequest("index scan: arc starts and ends differ in number")
        runs = list(zip(request.start, request.end, strict=True))
        refusal = self._view.scan_refusal(runs)
        if refusal is not None:
            self._stats.incr("queries.scans_refused")
            raise NotReady(refusal)
        try:
            if not 1 <= request.limit <= MAX_PAGE:
                raise ValueError(f"page size {request.limit} is outside 1..{MAX_PAGE}")
            arcs = key_filter(runs) if runs else None  # no arcs: the whole ring
            keep = _both(arcs, request.prefix)
            if request.index:
                if request.lo is None or request.hi is None:
                    raise ValueError("an index scan needs both bounds")
                lo = index_terms.decode_term(request.lo, "low")
                hi = index_terms.decode_term(request.hi, "high")
                after = None
                if request.after_key is not None and request.after_term is not None:
                    cursor_term = index_terms.decode_term(request.after_term, "cursor")
                    after = (cursor_term, request.after_key)
                found = self._storage.index_scan(
                    IndexScanPage(check_range(request.index, lo, hi), after, request.limit, keep)
                )
                rows = [(index_terms.encode_term(term), key) for term, key in found]
            else:
                keys = self._storage.key_scan(
                    request.prefix, request.after_key, request.limit, keep
                )
                rows = [(b"", key) for key in keys]
        except (ValueError, TypeError) as exc:
            self._stats.incr("rejected.bad_scan")
            raise InvalidRequest(f"index scan: {exc}") from None
        records: list[tuple[bytes, bytes]] = []
        truncated = len(rows) >= request.limit
        if request.records:
            found_records = self._storage.get_many(list(dict.fromkeys(k for _t, k in rows)))
            budget = self._config.limits.max_frame // _VALUE_BUDGET_SHARE
            sent: set[bytes] = set()
            for position, (_term, key) in enumerate(rows):
                record = found_records.get(key)
                if record is None or key in sent:
                    continue
                budget -= len(record) + len(key)
                if budget < 0 and records:
                    # The reply must fit a frame: stop here, the coordinator continues
                    # after the last row sent.
                    rows = rows[:position]
                    truncated = True
                    break
                sent.add(key)
                records.append((key, record))
        self._stats.incr("queries.scans")
        return IndexScanReply(rows, records, truncated)


def query_mac_key(node_secret: bytes) -> bytes:
    """The key continuations are authenticated with, derived from the node's private key:
    secret, the same after a restart, and nothing to store or draw at random."""
    return hashlib.blake2b(node_secret, digest_size=32, person=b"p2pix-query-mac").digest()


def _plan_step(plan: CoveragePlan) -> dict[str, Any]:
    """A plan as a trace step shows it: each replica asked with its share of the ring."""
    return {
        "replicas_per_arc": plan.r,
        "nodes": [
            {"node": node, "arcs": len(runs), "share": round(share_of(runs), 6)}
            for node, runs in sorted(plan.assignments.items())
        ],
        "uncovered_share": round(plan.uncovered_share, 6),
    }


def _both(arcs: Callable[[bytes], bool] | None, prefix: bytes) -> Callable[[bytes], bool] | None:
    if not prefix:
        return arcs
    if arcs is None:
        return lambda key: key.startswith(prefix)
    return lambda key: key.startswith(prefix) and arcs(key)


def _decoded(record: bytes) -> VersionedObject | None:
    try:
        return versions.decode_object(record)
    except ValueError:
        return None


def _fold(merged: dict[bytes, VersionedObject], key: bytes, obj: VersionedObject) -> None:
    held = merged.get(key)
    merged[key] = obj if held is None else versions.merge(held, obj)


def _rows_of(query: _Query, key: bytes, obj: VersionedObject) -> list[Row]:
    """The rows a merged version answers: its matching terms (live ones), or the key."""
    if not key.startswith(query.prefix):
        return []
    if query.terms is None:
        return [] if obj.is_deleted else [(b"", key)]
    terms = query.terms
    return [
        (term, key)
        for name, term in obj.index_terms
        if name == terms.index and terms.contains(term)
    ]


def _encoded(term: Term, query: _Query) -> bytes:
    return b"" if query.terms is None else index_terms.encode_term(term)


def _ring_digest(ring: Ring) -> bytes:
    return hashlib.blake2b("\n".join(sorted(ring.nodes)).encode(), digest_size=8).digest()


def _query_digest(request: QueryRequest) -> bytes:
    what = cbor2.dumps([request.index, request.lo, request.hi, request.prefix])
    return hashlib.blake2b(what, digest_size=16).digest()
