"""The only place Redis key names are built.

Every key starts with the prefix written as a hash tag, ``{<prefix>}``, so that all keys live in one
Redis Cluster slot and multi-key scripts work there. ``P`` below is ``{interactive}`` by default.

=============================  ==========  ===========================================================
key                            type        content and TTL
=============================  ==========  ===========================================================
``P:incident:<task_id>``       hash        the incident: state, decision, current try, redacted
                                           args, exception, deadline. No TTL while unresolved;
                                           ``retention`` once resolved. Operators read it.
``P:tries:<task_id>``          hash        try number -> JSON try record, with an operator's decision
                                           on it. Same TTL as the incident. A timeout's decision
                                           stays in the incident hash (readers merge it).
``P:message:<task_id>``        hash        the message to re-send (real args) and the serialised
                                           exception. Operators never read it (see the ACL in
                                           docs/security.md). Deleted when the flow resolves.
``P:open``                     zset        task ids of incidents waiting for an operator, by open time.
``P:active``                   zset        task ids decided but not yet resolved, by decision time.
``P:resolved``                 zset        task ids of resolved incidents, by resolution time;
                                           trimmed to ``retention`` by the sweeper.
``P:ids``                      zset        every incident's task id with score 0, for prefix lookup
                                           by ZRANGEBYLEX; trimmed with ``P:resolved``.
``P:deadlines``                zset        task id -> unix time of its next deadline: the decision
                                           timeout while open, the replay fallback while replaying.
``P:presence``                 zset        operator name, and ``team:<group>`` for each group an
                                           operator declared -> last seen unix time.
``P:operator:<name>``          hash        an operator's groups, host and first-seen time; TTL =
                                           retention.
``P:stream``                   stream      operator messages (incident.opened, .decided, ...),
                                           capped with ``MAXLEN ~ interactive_stream_maxlen``.
``P:decisions``                stream      decisions for workers to apply; consumer group
                                           ``appliers``. Never capped (a cap could drop unapplied
                                           decisions); an applier deletes each entry it acks.
``P:audit``                    zset        ``<task_id>:<try>`` -> decision time, for the audit trail;
                                           trimmed to ``retention``.
=============================  ==========  ===========================================================
"""

from __future__ import annotations

from dataclasses import dataclass

APPLIER_GROUP = "appliers"


@dataclass(frozen=True)
class Keys:
    prefix: str = "interactive"

    @property
    def _p(self) -> str:
        return "{" + self.prefix + "}"

    def incident(self, task_id: str) -> str:
        return f"{self._p}:incident:{task_id}"

    def tries(self, task_id: str) -> str:
        return f"{self._p}:tries:{task_id}"

    def message(self, task_id: str) -> str:
        return f"{self._p}:message:{task_id}"

    def operator(self, name: str) -> str:
        return f"{self._p}:operator:{name}"

    @property
    def open(self) -> str:
        return f"{self._p}:open"

    @property
    def active(self) -> str:
        return f"{self._p}:active"

    @property
    def resolved(self) -> str:
        return f"{self._p}:resolved"

    @property
    def ids(self) -> str:
        return f"{self._p}:ids"

    @property
    def deadlines(self) -> str:
        return f"{self._p}:deadlines"

    @property
    def presence(self) -> str:
        return f"{self._p}:presence"

    @property
    def stream(self) -> str:
        return f"{self._p}:stream"

    @property
    def decisions(self) -> str:
        return f"{self._p}:decisions"

    @property
    def audit(self) -> str:
        return f"{self._p}:audit"

    def all_patterns(self) -> list[str]:
        """Every key pattern this schema can produce (used by the schema test and clean-up)."""
        return [
            self.incident("*"), self.tries("*"), self.message("*"), self.operator("*"),
            self.open, self.active, self.resolved, self.ids, self.deadlines, self.presence,
            self.stream, self.decisions, self.audit,
        ]
